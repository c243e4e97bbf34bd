// Rooms `/rooms`: every room's captions and state, from one MQTT broker over MQTT-over-WebSocket.
//
// Each daemon (one per room) publishes with `mqtt.prefix = "<root>/<room>"`, e.g. `rooms/hall-a`
// (streamer/sinks/mqtt.py):
//   <root>/<room>/status            retained: "online" with each stream's state; the daemon's last
//                                   will replaces it with "offline" when it dies without a word
//   <root>/<room>/<stream>/final    finals, QoS 1
//   <root>/<room>/<stream>/partial  the live partial, QoS 0
// The page subscribes to those three filters, so a room appears as soon as its daemon connects
// (the retained status arrives first) and shows "offline" as soon as the broker publishes the
// will (at once when the connection drops, at the latest 1.5 keep-alives, 22 s, after it went
// silent). A room that comes back is the same card: a new session, marked "resumed".
//
// Parameters: ?mqtt=ws://broker:9001 (default: port 9001 on this page's host) ?root=rooms
// ?username= ?password= (give the page a broker user that may only read) ?lines=3 (paragraphs
// shown per stream).
//
// The MQTT client is MQTT.js (mqtt.esm.js, vendored with its licence); it reconnects by itself.
import mqtt from "./mqtt.esm.js";
import { CaptionState, pageParams, paragraphText } from "./captions.js";

const params = pageParams();
const root = (params.get("root") || "rooms").replace(/^\/+|\/+$/g, "");
const lines = Math.min(20, Math.max(1, parseInt(params.get("lines") || "3", 10) || 3));
const brokerUrl = params.get("mqtt") || `ws://${location.hostname || "127.0.0.1"}:9001`;

const $ = (id) => document.getElementById(id);
const roomsEl = $("rooms");
const brokerEl = $("broker");
const decoder = new TextDecoder();

// room name -> {name, el, stateEl, streamsEl, status, session, resumed, streams: Map}
// stream entry: {name, el, captionsEl, state: CaptionState, states (from status)}
const rooms = new Map();
window.rooms = rooms; // for the console and the tests

function setBroker(state, text) {
  brokerEl.dataset.state = state;
  brokerEl.textContent = text;
}

function roomOf(name) {
  let r = rooms.get(name);
  if (r) return r;
  const el = document.createElement("section");
  el.className = "room";
  el.dataset.room = name;
  el.dataset.state = "unknown";
  const h = document.createElement("h2");
  const title = document.createElement("span");
  title.className = "name";
  title.textContent = name;
  const stateEl = document.createElement("span");
  stateEl.className = "state";
  stateEl.textContent = "no status yet";
  h.append(title, stateEl);
  const streamsEl = document.createElement("div");
  el.append(h, streamsEl);
  r = { name, el, stateEl, streamsEl, status: null, session: null, streams: new Map() };
  rooms.set(name, r);
  // Keep the cards in name order, so a returning room comes back to its place.
  const after = [...rooms.keys()].sort().find((n) => n > name);
  roomsEl.insertBefore(el, after ? rooms.get(after).el : null);
  $("empty").hidden = true;
  return r;
}

function streamOf(r, name) {
  let s = r.streams.get(name);
  if (s) return s;
  const el = document.createElement("div");
  el.className = "stream";
  el.dataset.stream = name;
  const label = document.createElement("div");
  label.className = "name";
  label.textContent = name;
  const captionsEl = document.createElement("div");
  captionsEl.className = "captions";
  el.append(label, captionsEl);
  s = { name, el, label, captionsEl, state: new CaptionState(), marks: [] };
  r.streams.set(name, s);
  const names = [...r.streams.keys()].sort();
  const after = names.find((n) => n > name);
  r.streamsEl.insertBefore(el, after ? r.streams.get(after).el : null);
  for (const other of r.streams.values()) other.label.hidden = r.streams.size === 1;
  return s;
}

function describe(doc) {
  if (doc.status !== "online") {
    const why = { "connection lost": "connection lost", shutdown: "stopped" }[doc.reason] || doc.reason;
    return { state: "offline", text: "offline" + (why ? ` · ${why}` : "") };
  }
  const states = Object.entries(doc.states || {}).map(([name, s]) => [name, (s && s.state) || "unknown"]);
  const bad = states.filter(([, st]) => !["running", "starting"].includes(st));
  const text = states.length === 1 ? states[0][1] : states.map(([n, st]) => `${n} ${st}`).join(", ");
  return { state: bad.length ? "degraded" : "online", text: "online" + (text ? ` · ${text}` : "") };
}

function onStatus(name, payload) {
  if (!payload.length) {
    // An emptied retained status: the room was retired from the broker.
    const r = rooms.get(name);
    if (r) {
      r.el.remove();
      rooms.delete(name);
    }
    $("empty").hidden = rooms.size > 0;
    return;
  }
  let doc;
  try {
    doc = JSON.parse(decoder.decode(payload));
  } catch {
    return;
  }
  const r = roomOf(name);
  const wasOffline = r.status !== null && r.status.status !== "online";
  r.status = doc;
  if (doc.status === "online") {
    const session = `${doc.client_id || ""}|${doc.since || ""}`;
    if (r.session !== null && (session !== r.session || wasOffline)) {
      for (const s of r.streams.values()) s.marks.push(s.state.paragraphs.length);
    }
    r.session = session;
    for (const stream of Object.keys(doc.states || {})) streamOf(r, stream);
  } else {
    for (const s of r.streams.values()) s.state.live = null; // nobody will finish that sentence
  }
  const { state, text } = describe(doc);
  r.el.dataset.state = state;
  r.stateEl.textContent = text;
  for (const s of r.streams.values()) render(s);
}

function onEvent(name, stream, kind, payload) {
  let ev;
  try {
    ev = JSON.parse(decoder.decode(payload));
  } catch {
    return;
  }
  const r = roomOf(name);
  const s = streamOf(r, stream);
  const session = r.session || "?";
  if (kind === "final") {
    if (!s.state.final(session, ev)) return;
    const removed = s.state.trim(lines * 2).length;
    if (removed) s.marks = s.marks.map((m) => m - removed).filter((m) => m > 0);
  } else if (!s.state.partial(session, ev)) {
    return;
  }
  render(s);
}

function render(s) {
  const paras = s.state.paragraphs;
  const first = Math.max(0, paras.length - lines);
  const els = [];
  for (let i = first; i < paras.length; i++) {
    if (s.marks.includes(i)) {
      const mark = document.createElement("p");
      mark.className = "resumed";
      mark.textContent = "resumed";
      els.push(mark);
    }
    const p = document.createElement("p");
    p.className = "final";
    p.textContent = paragraphText(paras[i]);
    els.push(p);
  }
  const live = s.state.live;
  if (live && live.text.trim()) {
    const span = document.createElement("span");
    span.className = "live";
    span.textContent = live.text.trim();
    const open = s.state.openParagraph(live.key);
    const last = els[els.length - 1];
    if (open && last && last.className === "final") {
      last.append(" ", span);
    } else {
      const p = document.createElement("p");
      p.append(span);
      els.push(p);
    }
  }
  if (s.marks.includes(paras.length)) {
    const mark = document.createElement("p");
    mark.className = "resumed";
    mark.textContent = "resumed";
    els.push(mark);
  }
  s.captionsEl.replaceChildren(...els);
}

function onMessage(topic, payload) {
  if (!topic.startsWith(root + "/")) return;
  const parts = topic.slice(root.length + 1).split("/");
  if (parts.length === 2 && parts[1] === "status") onStatus(parts[0], payload);
  else if (parts.length === 3 && (parts[2] === "final" || parts[2] === "partial")) {
    onEvent(parts[0], parts[1], parts[2], payload);
  }
}

const client = mqtt.connect(brokerUrl, {
  username: params.get("username") || undefined,
  password: params.get("password") || undefined,
  clientId: "streamer-rooms-" + Math.random().toString(16).slice(2, 10),
  clean: true, // a live view: what was missed while away is in the transcripts, not replayed here
  reconnectPeriod: 2000,
  connectTimeout: 10000,
  keepalive: 30,
});
window.roomsClient = client;

client.on("connect", () => {
  setBroker("connected", `broker ${brokerUrl}`);
  client.subscribe(
    { [`${root}/+/status`]: { qos: 1 }, [`${root}/+/+/final`]: { qos: 1 }, [`${root}/+/+/partial`]: { qos: 0 } },
    (err) => {
      if (err) setBroker("error", `cannot subscribe: ${err.message}`);
    },
  );
});
client.on("reconnect", () => setBroker("connecting", `reconnecting to ${brokerUrl}…`));
client.on("offline", () => setBroker("offline", `broker ${brokerUrl} unreachable · retrying`));
client.on("error", (err) => setBroker("error", `broker ${brokerUrl}: ${err.message}`));
client.on("message", onMessage);

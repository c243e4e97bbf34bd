// Caption page `/`: the session's finals with timestamps, the live partial (settled part and
// changing tail), language tags, a stream picker, search, copy, downloads, auto-scroll.
// Page parameters: ?stream= ?token= ?partials=false ?max= (paragraphs kept on screen, 2000)
// ?ingest_token= (for "caption my microphone"; asked for when missing).
import { CaptionClient, clock, pageParams, paragraphText } from "./captions.js";
import { MicIngest } from "./mic.js";

const params = pageParams();
const maxParagraphs = Math.max(10, parseInt(params.get("max") || "2000", 10) || 2000);
const token = params.get("token");
const $ = (id) => document.getElementById(id);
const finalsEl = $("finals");
const stateEl = $("state");
const jumpEl = $("jump");

const client = new CaptionClient({
  stream: params.get("stream"),
  token,
  partials: !["false", "0", "no", "off"].includes((params.get("partials") || "").toLowerCase()),
});
window.captionClient = client; // for tests and the curious

const paraEls = new Map(); // paragraph key -> <p>
let pendingEl = null; // <p> for a live partial whose utterance has no final yet
const liveEl = document.createElement("span");
liveEl.className = "live";
let lastLang = null;
let query = "";

// --- auto-scroll: follows the live end until the user scrolls up ---------------------------------
let follow = true;
function atBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;
}
window.addEventListener("scroll", () => {
  follow = atBottom();
  jumpEl.hidden = follow;
}, { passive: true });
jumpEl.addEventListener("click", () => {
  follow = true;
  jumpEl.hidden = true;
  window.scrollTo(0, document.documentElement.scrollHeight);
});
function updated() {
  if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
  else jumpEl.hidden = false;
}

// --- rendering ---------------------------------------------------------------------------------
function paragraphEl(para) {
  let el = paraEls.get(para.key);
  if (el) return el;
  el = document.createElement("p");
  el.className = "para";
  el.dataset.key = para.key;
  const time = document.createElement("time");
  time.textContent = clock(para.start);
  time.title = "stream time (audio clock); received " + new Date(para.received).toLocaleTimeString();
  el.append(time);
  if (para.lang && para.lang !== lastLang) {
    const tag = document.createElement("span");
    tag.className = "lang";
    tag.textContent = para.lang;
    tag.title = "language";
    el.append(tag);
  }
  lastLang = para.lang || lastLang;
  paraEls.set(para.key, el);
  finalsEl.insertBefore(el, pendingEl && pendingEl.isConnected ? pendingEl : null);
  return el;
}

function addFinal(para, ev) {
  const el = paragraphEl(para);
  if (!ev.text.trim()) return;
  const span = document.createElement("span");
  span.className = "final";
  span.dataset.seq = String(ev.seq);
  span.dataset.session = para.session;
  span.title = "#" + ev.seq + "  " + ev.start.toFixed(1) + "–" + ev.end.toFixed(1) + " s";
  span.textContent = ev.text.trim();
  const before = liveEl.parentNode === el ? liveEl : null;
  if (el.querySelector(".final")) el.insertBefore(document.createTextNode(" "), before);
  el.insertBefore(span, before);
  applySearch(el);
}

function renderLive() {
  const live = client.state.live;
  if (!live || !live.text.trim()) {
    liveEl.remove();
    if (pendingEl) pendingEl.remove();
    return;
  }
  const stable = document.createElement("span");
  stable.className = "stable";
  stable.textContent = live.stable;
  const tail = document.createElement("span");
  tail.className = "tail";
  tail.textContent = live.text.slice(live.stable.length);
  liveEl.replaceChildren(stable, tail);
  const open = client.state.openParagraph(live.key);
  const host = open ? paraEls.get(open.key) : null;
  if (host) {
    if (pendingEl) pendingEl.remove();
    if (liveEl.parentNode !== host) host.append(liveEl);
  } else {
    if (!pendingEl) {
      pendingEl = document.createElement("p");
      pendingEl.className = "para pending";
      pendingEl.append(document.createElement("time"));
    }
    pendingEl.querySelector("time").textContent = clock(live.start);
    if (liveEl.parentNode !== pendingEl) pendingEl.append(liveEl);
    if (!pendingEl.isConnected) finalsEl.append(pendingEl);
  }
}

function trim() {
  for (const para of client.state.trim(maxParagraphs)) {
    const el = paraEls.get(para.key);
    if (el) el.remove();
    paraEls.delete(para.key);
  }
  while (finalsEl.firstElementChild && finalsEl.firstElementChild.tagName === "HR") finalsEl.firstElementChild.remove();
}

client.addEventListener("hello", (e) => {
  const { hello, restarted } = e.detail;
  const stream = client.stream || hello.streams[0] || "";
  offerMic(stream);
  $("stream").textContent = stream;
  $("model").textContent = hello.model + (hello.language ? " · " + hello.language : "");
  document.title = "captions · " + stream;
  const picker = $("streams");
  picker.replaceChildren(...hello.streams.map((name) => new Option(name, name, false, name === stream)));
  $("picker").hidden = hello.streams.length < 2;
  const q = token ? "?token=" + encodeURIComponent(token) : "";
  for (const ext of ["txt", "srt", "vtt"]) {
    const a = $("dl-" + ext);
    a.href = "/transcript/" + encodeURIComponent(stream) + "." + ext + q;
    a.download = stream + "." + ext;
  }
  if (restarted && finalsEl.lastElementChild) {
    const hr = document.createElement("hr");
    hr.className = "break";
    hr.title = "the daemon restarted";
    finalsEl.insertBefore(hr, pendingEl && pendingEl.isConnected ? pendingEl : null);
  }
});
$("streams").addEventListener("change", (e) => {
  const q = pageParams();
  q.set("stream", e.target.value);
  location.search = q.toString();
});

client.addEventListener("final", (e) => {
  addFinal(e.detail.paragraph, e.detail.final);
  renderLive();
  trim();
  updated();
});
client.addEventListener("partial", () => {
  renderLive();
  updated();
});
client.addEventListener("gap", (e) => {
  const g = e.detail.gap;
  const el = $("gap");
  el.hidden = false;
  el.textContent = "Finals " + (g.since + 1) + "–" + (g.first_seq - 1) + " are no longer kept for live clients; "
    + "the downloads have the whole session.";
});

function showState(state, text) {
  stateEl.className = "state " + state;
  stateEl.textContent = text;
}
client.addEventListener("state", (e) => {
  showState(e.detail.state, e.detail.text);
  if (e.detail.state !== "live") renderLive();
});
client.addEventListener("status", (e) => {
  const s = e.detail.status;
  if (s.state === "running") showState("live", "live");
  else showState("reconnecting", "stream " + s.state + (s.detail ? ": " + s.detail : ""));
});

// --- caption my microphone --------------------------------------------------------------------
// The button shows when the stream takes audio over /ingest (its source is `ingest`, from the open
// /streams route), or when the page was given an ingest token. The ingest token is separate from
// the read token; it comes from ?ingest_token= or is asked for once and kept for this page.
let ingestToken = params.get("ingest_token");
let mic = null;
const micEl = $("mic");
const micStateEl = $("mic-state");

async function offerMic(stream) {
  if (mic && mic.active) return;
  micEl.dataset.stream = stream;
  let takesIngest = false;
  try {
    const r = await fetch("/streams", { cache: "no-store" });
    const list = r.ok ? await r.json() : [];
    takesIngest = list.some((s) => s.name === stream && String(s.source || "").startsWith("ingest"));
  } catch {
    takesIngest = false;
  }
  micEl.hidden = !(takesIngest || ingestToken);
}

function showMic(state, text) {
  micStateEl.className = state;
  micStateEl.textContent = text;
  const on = state === "on" || state === "starting";
  micEl.classList.toggle("on", on);
  micEl.textContent = on ? "stop my microphone" : "caption my microphone";
}

micEl.addEventListener("click", () => {
  if (mic && mic.active) {
    mic.stop();
    return;
  }
  if (!ingestToken) {
    ingestToken = (window.prompt("Ingest token (server.ingest_token) for audio into this stream:") || "").trim();
    if (!ingestToken) return;
  }
  mic = new MicIngest({ stream: micEl.dataset.stream, token: ingestToken });
  mic.addEventListener("state", (e) => {
    showMic(e.detail.state, e.detail.text);
    // A refused token is asked for again on the next click.
    if (e.detail.state === "error" && e.detail.text.includes("token")) ingestToken = null;
  });
  window.micIngest = mic; // for tests and the curious
  mic.start();
});
window.addEventListener("pagehide", () => mic && mic.stop());

// --- search ------------------------------------------------------------------------------------
function applySearch(el) {
  const text = Array.from(el.querySelectorAll(".final"), (s) => s.textContent).join(" ").toLowerCase();
  el.classList.toggle("nomatch", query !== "" && !text.includes(query));
}
$("search").addEventListener("input", (e) => {
  query = e.target.value.trim().toLowerCase();
  for (const el of paraEls.values()) applySearch(el);
  const n = query ? Array.from(paraEls.values()).filter((el) => !el.classList.contains("nomatch")).length : null;
  $("matches").textContent = n === null ? "" : n + (n === 1 ? " match" : " matches");
});

// --- copy --------------------------------------------------------------------------------------
export function sessionText() {
  return client.state.paragraphs.map((p) => "[" + clock(p.start) + "] " + paragraphText(p)).join("\n") + "\n";
}
window.sessionText = sessionText;
$("copy").addEventListener("click", async () => {
  const text = sessionText();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "copied";
  setTimeout(() => ($("copy").textContent = "copy"), 1500);
});

client.start();

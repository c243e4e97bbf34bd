// Meeting-room display `/display`: full screen, high contrast, very large text, the last few
// lines, room name and clock; runs for weeks on a kiosk browser.
// Parameters: ?room= (title; default the stream name) ?stream= ?token= ?theme=dark|light
// ?size= (text size, CSS length or a number of px; default 7vh) ?lines= (visible lines, 5)
// ?clock=24|12|off ?keep= (paragraphs kept in the page, 50).
//
// Bounded: only the newest `keep` paragraphs stay in the DOM and in memory. Reconnects forever
// (captions.js), and also at once when the browser reports the network is back or the tab is
// shown again. While not connected, or while the stream is not running, the text dims and a calm
// "captions paused" note shows (after a short grace period, so quick reconnects do not flash).
import { CaptionClient, pageParams } from "./captions.js";

const params = pageParams();
const keep = Math.max(5, parseInt(params.get("keep") || "50", 10) || 50);
const clockMode = params.get("clock") || "24";
const root = document.documentElement;
if (params.get("theme") === "light") root.classList.add("light");
const size = params.get("size");
if (size) root.style.setProperty("--size", /^\d+(\.\d+)?$/.test(size) ? size + "px" : size.replace(/[^\w.%]/g, ""));
const lines = parseInt(params.get("lines") || "", 10);
if (lines > 0) root.style.setProperty("--lines", String(Math.min(20, lines)));

const $ = (id) => document.getElementById(id);
const captionsEl = $("captions");
const paraEls = new Map();
const liveEl = document.createElement("span");
liveEl.className = "live";
let pendingEl = null;

const client = new CaptionClient({ stream: params.get("stream"), token: params.get("token") });
window.captionClient = client;

function paragraphEl(para) {
  let el = paraEls.get(para.key);
  if (!el) {
    el = document.createElement("p");
    el.dataset.key = para.key;
    paraEls.set(para.key, el);
    captionsEl.insertBefore(el, pendingEl && pendingEl.isConnected ? pendingEl : null);
  }
  return el;
}

function renderLive() {
  const live = client.state.live;
  if (!live || !live.text.trim()) {
    liveEl.remove();
    if (pendingEl) pendingEl.remove();
    return;
  }
  liveEl.textContent = live.text;
  const open = client.state.openParagraph(live.key);
  const host = open ? paraEls.get(open.key) : null;
  if (host) {
    if (pendingEl) pendingEl.remove();
    if (liveEl.parentNode !== host) host.append(liveEl);
  } else {
    pendingEl = pendingEl || document.createElement("p");
    if (liveEl.parentNode !== pendingEl) pendingEl.append(liveEl);
    if (!pendingEl.isConnected) captionsEl.append(pendingEl);
  }
}

client.addEventListener("hello", (e) => {
  const stream = client.stream || e.detail.hello.streams[0] || "";
  $("room").textContent = params.get("room") || stream;
  document.title = "captions · " + (params.get("room") || stream);
});
client.addEventListener("final", (e) => {
  const { paragraph, final } = e.detail;
  if (final.text.trim()) {
    const el = paragraphEl(paragraph);
    const span = document.createElement("span");
    span.className = "final";
    span.dataset.seq = String(final.seq);
    span.textContent = final.text.trim();
    const before = liveEl.parentNode === el ? liveEl : null;
    if (el.querySelector(".final")) el.insertBefore(document.createTextNode(" "), before);
    el.insertBefore(span, before);
  }
  for (const old of client.state.trim(keep)) {
    const el = paraEls.get(old.key);
    if (el) el.remove();
    paraEls.delete(old.key);
  }
  renderLive();
  setPaused(false);
});
client.addEventListener("partial", () => {
  renderLive();
  setPaused(false);
});

// --- paused / reconnecting ---------------------------------------------------------------------
let connected = false;
let streamRunning = true;
let pauseTimer = null;
function setPaused(paused) {
  if (!paused) {
    clearTimeout(pauseTimer);
    pauseTimer = null;
    document.body.classList.remove("paused");
    return;
  }
  if (pauseTimer === null && !document.body.classList.contains("paused")) {
    pauseTimer = setTimeout(() => {
      pauseTimer = null;
      document.body.classList.add("paused");
    }, 1500);
  }
}
function update(note) {
  $("state").textContent = note;
  if (connected && streamRunning) setPaused(false);
  else setPaused(true);
}
client.addEventListener("state", (e) => {
  connected = e.detail.state === "live";
  if (!connected) {
    liveEl.remove();
    if (pendingEl) pendingEl.remove();
  }
  $("paused").textContent = e.detail.state === "refused" ? e.detail.text : "captions paused · reconnecting";
  update(connected ? "" : e.detail.state === "refused" ? "" : "reconnecting…");
});
client.addEventListener("status", (e) => {
  const s = e.detail.status;
  streamRunning = s.state === "running";
  if (!streamRunning) $("paused").textContent = "captions paused";
  update(streamRunning ? "" : "stream " + s.state);
});

// --- clock -------------------------------------------------------------------------------------
function tick() {
  if (clockMode === "off") return;
  const now = new Date();
  $("clock").textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: clockMode === "12" });
}
tick();
setInterval(tick, 1000);

client.start();

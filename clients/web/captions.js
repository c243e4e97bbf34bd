// Shared by the caption page, the overlay and the display: the connection to the daemon and the
// protocol-2 caption state. No DOM here.
//
// Connection (`CaptionClient`): WebSocket /ws?stream=&since=&token= on the page's own host;
// reconnects forever with exponential backoff and jitter (0.5 s doubling to 15 s, times 0.5-1;
// at once after close code 4008 "too slow"); resumes with since = the last final seq seen, so no
// final is missed or doubled. `hello.session` changes when the daemon restarted (seq starts again
// at 1): the client then asks for the new session's finals from the start (since=0) and keeps what
// it shows. Finals are deduplicated by (session, stream, seq). An application ping every 15 s
// detects a dead connection the browser has not noticed (network outage) and reconnects. When the
// handshake is refused (HTTP 401/403/404... which a browser only reports as a failed WebSocket),
// the same URL is fetched once to read the server's one-line reason.
//
// State (`CaptionState`): finals are appended; the finals of one utterance join into one
// paragraph, and the final with `last` closes it; a partial replaces the live tail of its
// utterance (its `stable` prefix is settled, the rest may change).

export function pageParams() {
  return new URLSearchParams(location.search);
}

export class CaptionState {
  constructor() {
    this.paragraphs = []; // {key, session, stream, utterance, finals: [ev...], closed, lang, start, received}
    this.live = null; // {key, session, stream, utterance, seq, text, stable, lang, start}
    this.lastSeq = new Map(); // "session|stream" -> last final seq seen
    this.duplicates = 0;
  }

  static key(session, stream, utterance) {
    return session + "|" + stream + "|" + utterance;
  }

  seen(session, stream) {
    const v = this.lastSeq.get(session + "|" + stream);
    return v === undefined ? null : v;
  }

  // Apply a final; returns the paragraph it joined (or opened), or null for a duplicate.
  final(session, ev) {
    const skey = session + "|" + ev.stream;
    const last = this.lastSeq.get(skey);
    if (last !== undefined && ev.seq <= last) {
      this.duplicates += 1;
      return null;
    }
    this.lastSeq.set(skey, ev.seq);
    const key = CaptionState.key(session, ev.stream, ev.utterance);
    if (this.live && this.live.key === key) this.live = null; // the next partial brings the rest
    if (!ev.text.trim()) {
      const open = this.openParagraph(key);
      if (open && ev.last) open.closed = true;
      return open || { key, finals: [], closed: true, empty: true };
    }
    let para = this.openParagraph(key);
    if (!para) {
      para = {
        key, session, stream: ev.stream, utterance: ev.utterance, finals: [], closed: false,
        lang: ev.lang || null, start: ev.start, received: Date.now(),
      };
      this.paragraphs.push(para);
    }
    para.finals.push(ev);
    para.closed = ev.last !== false;
    para.lang = ev.lang || para.lang;
    para.received = Date.now();
    return para;
  }

  openParagraph(key) {
    const p = this.paragraphs[this.paragraphs.length - 1];
    return p && p.key === key && !p.closed ? p : null;
  }

  // Apply a partial; returns false when it is stale (its final is already here).
  partial(session, ev) {
    const last = this.seen(session, ev.stream);
    if (last !== null && ev.seq <= last) return false;
    this.live = {
      key: CaptionState.key(session, ev.stream, ev.utterance), session, stream: ev.stream,
      utterance: ev.utterance, seq: ev.seq, rev: ev.rev, text: ev.text, stable: ev.stable || "",
      lang: ev.lang || null, start: ev.start, received: Date.now(),
    };
    return true;
  }

  // Keep the newest `max` paragraphs; returns the removed ones.
  trim(max) {
    if (this.paragraphs.length <= max) return [];
    return this.paragraphs.splice(0, this.paragraphs.length - max);
  }

  // Keep only the current session's dedupe entries (old sessions never come back).
  forgetSessions(current) {
    for (const k of [...this.lastSeq.keys()]) if (!k.startsWith(current + "|")) this.lastSeq.delete(k);
  }
}

export function paragraphText(para) {
  return para.finals.map((f) => f.text.trim()).filter(Boolean).join(" ");
}

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
}

const BACKOFF_MIN = 500;
const BACKOFF_MAX = 15000;
const PING_EVERY = 15000;
const PING_TIMEOUT = 10000;

// Events (EventTarget): "hello" {hello, restarted}, "final" {paragraph, final}, "partial" {live},
// "status" {status}, "gap" {gap}, "state" {state, text, retryIn}; state is one of
// "connecting", "live", "reconnecting", "refused".
export class CaptionClient extends EventTarget {
  constructor({ stream = null, token = null, partials = true, state = new CaptionState() } = {}) {
    super();
    this.stream = stream;
    this.token = token;
    this.partials = partials;
    this.state = state;
    this.session = null;
    this.hello = null;
    this.restartPending = false; // a new session was seen; its hello is not announced yet
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.connections = 0;
    this.onOnline = () => this.reconnectNow();
    window.addEventListener("online", this.onOnline);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.reconnectNow();
    });
  }

  query() {
    const q = new URLSearchParams();
    if (this.stream) q.set("stream", this.stream);
    if (this.token) q.set("token", this.token);
    if (!this.partials) q.set("partials", "false");
    const since = this.since();
    if (since !== null) q.set("since", String(since));
    return q;
  }

  // The last final seq of the current session, 0 when a session is known but nothing arrived
  // yet, null before the first hello (the server then replays its last few finals).
  since() {
    if (this.session === null || !this.hello) return null;
    const stream = this.stream || this.hello.streams[0];
    const seen = this.state.seen(this.session, stream);
    return seen === null ? 0 : seen;
  }

  url(query) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws?" + query.toString();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, text, retryIn = null) {
    this.emit("state", { state, text, retryIn });
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    if (this.ws) this.ws.close(1000);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.timer);
    this.connect();
  }

  connect() {
    const query = this.query();
    const sentSince = query.has("since") ? Number(query.get("since")) : null;
    let opened = false;
    let ignore = false; // after a session change on this socket
    let lastMessage = Date.now();
    let pinger = null;
    this.setState("connecting", this.connections ? "reconnecting…" : "connecting…");
    const ws = new WebSocket(this.url(query));
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.connections += 1;
      pinger = setInterval(() => {
        if (Date.now() - lastMessage > PING_EVERY + PING_TIMEOUT) {
          ws.close(4000, "no answer to ping"); // a dead connection the browser did not notice
          return;
        }
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, PING_EVERY);
    };
    ws.onmessage = (msg) => {
      lastMessage = Date.now();
      if (ignore) return;
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (ev.type === "hello") {
        const changed = this.session !== null && ev.session !== this.session;
        const restarted = changed || this.restartPending;
        this.session = ev.session;
        this.hello = ev;
        this.attempt = 0;
        if (changed) this.state.forgetSessions(ev.session);
        if (changed && sentSince !== null && sentSince > 0) {
          // Our since counted in the old session; ask the new one from its first final.
          this.restartPending = true;
          ignore = true;
          ws.close(1000, "new session");
          return;
        }
        this.restartPending = false;
        this.setState("live", "live");
        this.emit("hello", { hello: ev, restarted });
      } else if (ev.type === "final") {
        const paragraph = this.state.final(this.session, ev);
        if (paragraph) this.emit("final", { paragraph, final: ev });
      } else if (ev.type === "partial") {
        if (this.state.partial(this.session, ev)) this.emit("partial", { live: this.state.live });
      } else if (ev.type === "status") {
        this.emit("status", { status: ev });
      } else if (ev.type === "gap") {
        this.emit("gap", { gap: ev });
      }
    };
    ws.onclose = (ev) => {
      clearInterval(pinger);
      if (this.ws === ws) this.ws = null;
      if (this.stopped) return;
      if (ignore) {
        this.connect(); // same session change: at once, with since=0
        return;
      }
      if (!opened) {
        this.explainRefusal(query);
      }
      const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt);
      this.attempt += 1;
      const wait = ev.code === 4008 ? 0 : base * (0.5 + Math.random() * 0.5);
      if (opened) {
        const why = ev.code === 1001 ? "server restarting" : "connection lost";
        this.setState("reconnecting", why + ", reconnecting…", wait);
      }
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  // Browsers hide the HTTP status of a refused WebSocket handshake: ask the same URL over plain
  // HTTP, where the server gives the same refusal with its one-line reason.
  async explainRefusal(query) {
    let status = 0;
    let reason = "";
    try {
      const r = await fetch("/ws?" + query.toString(), { cache: "no-store" });
      status = r.status;
      reason = (await r.text()).trim().split("\n")[0];
    } catch {
      this.setState("reconnecting", "daemon not reachable, retrying…");
      return;
    }
    if (this.stopped || this.ws) return;
    if (status === 401 || status === 403) {
      this.setState("refused", "access refused: check the token (" + reason + ")");
    } else if (status >= 400 && status < 500 && status !== 426) {
      this.setState("refused", "refused: " + reason);
    } else if (status === 503) {
      this.setState("reconnecting", reason + ", retrying…");
    } else {
      this.setState("reconnecting", "not connected, retrying…");
    }
  }
}

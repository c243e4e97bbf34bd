// "Caption my microphone": the browser's microphone to the daemon's `/ingest?stream=NAME`
// WebSocket, as 16 kHz mono PCM16 binary frames (docs/protocol.md, "Audio ingest"); the page's
// own `/ws` connection then shows the captions like any stream's.
//
// Order of things: the WebSocket first (a wrong token or a busy stream is told before the
// browser asks for the microphone), then getUserMedia, then the AudioWorklet (mic-worklet.js)
// that downsamples and frames the audio. Every failure becomes one readable sentence in a
// "state" event; the ingest token is never shown.

const FRAME_MS = 40;
// Frames are dropped (and counted) rather than queued when the socket cannot keep up: more than
// this much audio waiting would be sent faster than real time later, which the daemon refuses.
const MAX_BUFFERED = 16000 * 2 * 1.5;

// Close codes of /ingest after the upgrade, in words.
const CLOSE_REASONS = {
  1003: "the daemon refused the audio format",
  1008: "audio arrived faster than real time; the daemon closed the connection",
  1009: "an audio frame was too large for the daemon",
  1013: "someone else is already captioning this stream (one microphone per stream)",
};

// Events (EventTarget): "state" {state, text} with state "starting", "on", "off" or "error";
// "frame" {bytes} after each frame sent.
export class MicIngest extends EventTarget {
  constructor({ stream, token, frameMs = FRAME_MS }) {
    super();
    this.stream = stream;
    this.token = token;
    this.frameMs = frameMs;
    this.ws = null;
    this.media = null;
    this.ctx = null;
    this.node = null;
    this.sent = 0; // bytes
    this.dropped = 0; // frames
    this.active = false;
    this.contextRate = null; // the AudioContext's rate, which the worklet converts from
  }

  emit(state, text) {
    this.dispatchEvent(new CustomEvent("state", { detail: { state, text } }));
  }

  query() {
    const q = new URLSearchParams();
    q.set("stream", this.stream);
    q.set("token", this.token);
    return q;
  }

  async start() {
    if (this.active) return;
    this.active = true;
    this.sent = 0;
    this.dropped = 0;
    if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
      this.fail("the microphone needs a secure page: open it over https or on localhost");
      return;
    }
    this.emit("starting", "connecting the microphone…");
    // Made and resumed now, inside the click's task: browsers (Safari strictly) start audio only
    // from a user gesture, and the awaits below leave it.
    try {
      this.ctx = new AudioContext();
      this.contextRate = this.ctx.sampleRate;
      this.ctx.resume().catch(() => {});
    } catch (e) {
      this.fail("the browser cannot process audio: " + (e && e.message ? e.message : e));
      return;
    }
    let ws;
    try {
      ws = await this.open();
    } catch (e) {
      this.fail(e.message);
      return;
    }
    if (!this.active) {
      ws.close(1000);
      return;
    }
    this.ws = ws;
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const why = CLOSE_REASONS[ev.code] || (ev.reason ? "ingest closed: " + ev.reason : "ingest connection lost");
      this.fail(why);
    };
    try {
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      this.fail(micError(e));
      return;
    }
    if (!this.active) return this.release();
    const ctx = this.ctx; // release() may run during the awaits below
    try {
      await ctx.audioWorklet.addModule(new URL("mic-worklet.js", import.meta.url));
      if (!this.active) return;
      const source = ctx.createMediaStreamSource(this.media);
      this.node = new AudioWorkletNode(ctx, "mic-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        channelCount: 1,
        channelCountMode: "explicit", // a stereo microphone is mixed down to one channel
        processorOptions: { frameMs: this.frameMs },
      });
      this.node.port.onmessage = (e) => this.send(e.data);
      source.connect(this.node);
      // Connected to the output so the graph pulls it; the processor writes nothing, so it is silent.
      this.node.connect(ctx.destination);
      await ctx.resume();
    } catch (e) {
      this.fail("the audio capture could not start: " + (e && e.message ? e.message : e));
      return;
    }
    if (!this.active) return this.release();
    const track = this.media.getAudioTracks()[0];
    if (track) track.onended = () => this.fail("the microphone was disconnected");
    this.emit("on", "microphone on" + (track && track.label ? " (" + track.label + ")" : ""));
  }

  send(buffer) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (ws.bufferedAmount > MAX_BUFFERED) {
      this.dropped += 1;
      return;
    }
    ws.send(buffer);
    this.sent += buffer.byteLength;
    this.dispatchEvent(new CustomEvent("frame", { detail: { bytes: buffer.byteLength } }));
  }

  // Resolves with the open socket, or rejects with the reason the daemon gave.
  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = scheme + "//" + location.host + "/ingest?" + this.query().toString();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => resolve(ws);
      ws.onclose = async (ev) => {
        // Closed during the handshake (the browser hides the HTTP status), or right after it
        // (1013: the stream already has a client).
        if (CLOSE_REASONS[ev.code]) reject(new Error(CLOSE_REASONS[ev.code]));
        else reject(new Error(await this.explainRefusal()));
      };
    });
  }

  // The same URL over plain HTTP answers with the refusal's status and JSON reason.
  async explainRefusal() {
    let status = 0;
    let reason = "";
    try {
      const r = await fetch("/ingest?" + this.query().toString(), { cache: "no-store" });
      status = r.status;
      const body = await r.text();
      try {
        reason = JSON.parse(body).error || body;
      } catch {
        reason = body.trim().split("\n")[0];
      }
    } catch {
      return "the daemon is not reachable";
    }
    if (status === 401) return "ingest refused: the ingest token is missing or wrong (" + reason + ")";
    if (status === 403) return "ingest refused: " + reason;
    if (status === 404) return "this stream does not take audio: " + reason;
    if (status === 426) return "the ingest WebSocket failed (a proxy that does not pass WebSockets?)";
    return "ingest refused (" + status + "): " + reason;
  }

  fail(text) {
    if (!this.active) return; // stopped already: a late failure of what was stopped says nothing
    this.release();
    this.emit("error", text);
  }

  stop() {
    if (!this.active) return;
    this.release();
    this.emit("off", "microphone off");
  }

  release() {
    this.active = false;
    if (this.node) {
      this.node.port.postMessage("stop");
      this.node.disconnect();
      this.node = null;
    }
    if (this.ctx) {
      this.ctx.close().catch(() => {});
      this.ctx = null;
    }
    if (this.media) {
      for (const t of this.media.getTracks()) t.stop();
      this.media = null;
    }
    const ws = this.ws;
    this.ws = null;
    // A normal close: the daemon ends the stream's open utterance with a final.
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "microphone off");
  }
}

function micError(e) {
  const name = e && e.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "microphone permission denied: allow the microphone for this page in the browser";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") return "no microphone found";
  if (name === "NotReadableError" || name === "AbortError") {
    return "the microphone is busy or could not be opened (another program may hold it)";
  }
  return "the microphone could not start: " + (e && e.message ? e.message : String(e));
}

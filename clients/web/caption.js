// Caption page: connects to /ws on the same host, shows finals and the live partial, and
// reconnects with ?since=<last final seq> so no final is missed or shown twice.
// Page parameters (copied to /ws): stream, token, partials. Extra: max = finals kept on screen.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const maxFinals = parseInt(params.get("max") || "200", 10);
  const finalsEl = document.getElementById("finals");
  const partialEl = document.getElementById("partial");
  const stateEl = document.getElementById("state");
  let lastSeq = null;      // last final seq shown (null: nothing yet)
  let delay = 500;         // reconnect delay (ms), doubled up to 15 s
  let pingTimer = null;

  function setState(text, live) {
    stateEl.textContent = text;
    stateEl.className = live ? "live" : "down";
  }

  function wsUrl() {
    const q = new URLSearchParams();
    for (const k of ["stream", "token", "partials"]) {
      if (params.get(k) !== null) q.set(k, params.get(k));
    }
    if (lastSeq !== null) q.set("since", String(lastSeq));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws?" + q.toString();
  }

  function showFinal(ev) {
    // The server never repeats a final after ?since=, so a seq that does not grow means the daemon
    // restarted (numbering starts at 1 per session): mark the break and go on.
    if (lastSeq !== null && ev.seq <= lastSeq) {
      const hr = document.createElement("hr");
      finalsEl.appendChild(hr);
    }
    lastSeq = ev.seq;
    partialEl.textContent = "";
    if (!ev.text.trim()) return;
    const p = document.createElement("p");
    p.textContent = ev.text.trim();
    p.title = "#" + ev.seq + " " + ev.start.toFixed(1) + "–" + ev.end.toFixed(1) + " s";
    finalsEl.appendChild(p);
    while (finalsEl.childElementCount > maxFinals) finalsEl.firstElementChild.remove();
    window.scrollTo(0, document.body.scrollHeight);
  }

  function showPartial(ev) {
    const stable = document.createElement("span");
    stable.className = "stable";
    stable.textContent = ev.stable;
    partialEl.replaceChildren(stable, document.createTextNode(ev.text.slice(ev.stable.length)));
  }

  function connect() {
    const ws = new WebSocket(wsUrl());
    ws.onopen = function () {
      delay = 500;
      setState("live", true);
      pingTimer = setInterval(function () { ws.send(JSON.stringify({ type: "ping" })); }, 25000);
    };
    ws.onmessage = function (msg) {
      const ev = JSON.parse(msg.data);
      if (ev.type === "hello") {
        document.getElementById("model").textContent = ev.model + (ev.language ? " · " + ev.language : "");
        document.getElementById("stream").textContent = params.get("stream") || ev.streams[0] || "";
      } else if (ev.type === "final") {
        showFinal(ev);
      } else if (ev.type === "partial") {
        showPartial(ev);
      } else if (ev.type === "status") {
        setState(ev.state + (ev.detail ? ": " + ev.detail : ""), ev.state === "running");
      }
    };
    ws.onclose = function (ev) {
      clearInterval(pingTimer);
      partialEl.textContent = "";
      setState("disconnected (" + ev.code + (ev.reason ? " " + ev.reason : "") + "), retrying…", false);
      // 4008 = too slow: reconnect at once; the server replays from lastSeq.
      const wait = ev.code === 4008 ? 0 : delay;
      delay = Math.min(delay * 2, 15000);
      setTimeout(connect, wait);
    };
  }

  connect();
})();

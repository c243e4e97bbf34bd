// Stream overlay `/overlay` for an OBS Browser Source: transparent page, the last lines of the
// captions laid out like streamer/layout.py (roll-up: finals, then the live partial updating in
// place), lines fading out after `fade` seconds without new words. Every style value comes from the
// URL; `preset=` picks a set of defaults that explicit parameters override. README "Pages" lists
// them all.
import { CaptionClient, pageParams } from "./captions.js";
import { rollLines } from "./layout.js";

export const PRESETS = {
  classic: {
    font: "'DejaVu Sans', 'NanumGothic', Arial, sans-serif", size: 44, weight: 700, color: "#ffffff",
    outline: 3, outlinecolor: "#000000", shadow: 0, shadowcolor: "#000000", bg: "#000000", bgopacity: 0,
    box: "line", radius: 0, position: "bottom", align: "center",
  },
  broadcast: {
    font: "'DejaVu Sans Mono', 'NanumGothicCoding', monospace", size: 40, weight: 400, color: "#ffffff",
    outline: 0, outlinecolor: "#000000", shadow: 0, shadowcolor: "#000000", bg: "#000000", bgopacity: 0.85,
    box: "line", radius: 0, position: "bottom", align: "center",
  },
  minimal: {
    font: "'DejaVu Sans', 'NanumGothic', Arial, sans-serif", size: 34, weight: 500, color: "#ffffff",
    outline: 0, outlinecolor: "#000000", shadow: 8, shadowcolor: "#000000", bg: "#000000", bgopacity: 0,
    box: "line", radius: 0, position: "bottom", align: "left",
  },
  boxed: {
    font: "'DejaVu Sans', 'NanumGothic', Arial, sans-serif", size: 40, weight: 600, color: "#ffe066",
    outline: 0, outlinecolor: "#000000", shadow: 0, shadowcolor: "#000000", bg: "#14141e", bgopacity: 0.8,
    box: "block", radius: 14, position: "bottom", align: "center",
  },
};

export const DEFAULTS = {
  preset: "classic", lines: 2, chars: 42, margin: 48, width: 90, lineheight: 1.25, fade: 6,
  stream: null, token: null, partials: "true",
};

const NUMERIC = new Set(["size", "weight", "outline", "shadow", "bgopacity", "radius", "lines", "chars", "margin",
  "width", "lineheight", "fade"]);
const CHOICES = { box: ["line", "block"], position: ["bottom", "top"], align: ["left", "center", "right"] };
const COLORS = new Set(["color", "outlinecolor", "shadowcolor", "bg"]);

// A colour from the URL: #rgb/#rrggbb(aa), the same without "#", or a CSS colour name.
function colour(v) {
  if (/^[0-9a-f]{3,8}$/i.test(v)) return "#" + v;
  if (/^#[0-9a-f]{3,8}$/i.test(v) || /^[a-z]{3,20}$/i.test(v)) return v;
  return null;
}

export function options(params) {
  const presetName = PRESETS[params.get("preset")] ? params.get("preset") : DEFAULTS.preset;
  const o = { ...DEFAULTS, ...PRESETS[presetName], preset: presetName };
  for (const [k, raw] of params) {
    if (!(k in o) || k === "preset") continue;
    const v = raw.trim();
    if (NUMERIC.has(k)) {
      const n = Number(v);
      if (Number.isFinite(n) && n >= 0) o[k] = n;
    } else if (COLORS.has(k)) {
      if (v === "none" || v === "transparent") {
        if (k === "bg") o.bgopacity = 0;
      } else {
        const c = colour(v);
        if (c) o[k] = c;
      }
    } else if (CHOICES[k]) {
      if (CHOICES[k].includes(v)) o[k] = v;
    } else if (k === "font") {
      if (/^[\w\s,'"-]{1,200}$/.test(v)) o.font = v;
    } else {
      o[k] = v;
    }
  }
  o.lines = Math.min(6, Math.max(1, Math.round(o.lines)));
  o.chars = Math.min(200, Math.max(10, Math.round(o.chars)));
  o.bgopacity = Math.min(1, o.bgopacity);
  o.width = Math.min(100, Math.max(10, o.width));
  return o;
}

function outlineShadow(width, color) {
  if (!width) return [];
  const out = [];
  for (let i = 0; i < 16; i++) {
    const a = (i * Math.PI) / 8;
    out.push(`${(Math.cos(a) * width).toFixed(2)}px ${(Math.sin(a) * width).toFixed(2)}px 0 ${color}`);
  }
  return out;
}

export function applyStyle(el, o) {
  const s = el.style;
  s.setProperty("--font", o.font);
  s.setProperty("--size", o.size + "px");
  s.setProperty("--weight", String(o.weight));
  s.setProperty("--color", o.color);
  s.setProperty("--margin", o.margin + "px");
  s.setProperty("--width", o.width + "%");
  s.setProperty("--lineheight", String(o.lineheight));
  s.setProperty("--radius", o.radius + "px");
  s.setProperty("--bg", `color-mix(in srgb, ${o.bg} ${Math.round(o.bgopacity * 100)}%, transparent)`);
  const shadows = outlineShadow(o.outline, o.outlinecolor);
  if (o.shadow) shadows.push(`0 0 ${o.shadow}px ${o.shadowcolor}`, `2px 2px ${o.shadow}px ${o.shadowcolor}`);
  s.setProperty("--text-shadow", shadows.length ? shadows.join(", ") : "none");
  el.className = [o.position, o.align, "box-" + o.box].join(" ");
}

// --- text buffer: recent finals (and the live partial), each with the time it arrived ---------------

function nonSpace(s) {
  let n = 0;
  for (const ch of s) if (!/\s/.test(ch)) n++;
  return n;
}

// `text` without its first `n` non-space characters (and the spaces after them).
function dropNonSpace(text, n) {
  let i = 0;
  const chars = Array.from(text);
  while (i < chars.length && n > 0) {
    if (!/\s/.test(chars[i])) n--;
    i++;
  }
  return chars.slice(i).join("").trimStart();
}

export class RollUp {
  constructor(o) {
    this.o = o;
    this.segments = []; // {text, at}
  }

  add(text, at) {
    if (text.trim()) this.segments.push({ text: text.trim(), at });
  }

  clear() {
    this.segments = [];
  }

  // The last `o.lines` lines, each with the arrival time of its newest word.
  lines(live, now, trimmed = false) {
    const segs = live && live.text.trim() ? [...this.segments, { text: live.text.trim(), at: live.at }] : this.segments;
    const all = rollLines(segs.map((s) => s.text).join(" "), this.o.chars);
    // Lines already scrolled away are dropped from the buffer, so it stays small. Whole lines
    // are dropped, so the lines after them lay out exactly as before.
    const keep = this.o.lines + 2;
    if (!trimmed && all.length > keep && this.segments.length) {
      let k = 0;
      for (const line of all.slice(0, all.length - keep)) k += nonSpace(line);
      const before = this.segments.length;
      while (this.segments.length && k >= nonSpace(this.segments[0].text)) {
        k -= nonSpace(this.segments.shift().text);
      }
      if (k > 0 && this.segments.length) {
        this.segments[0].text = dropNonSpace(this.segments[0].text, k);
        k = 0;
      }
      if (this.segments.length < before || k === 0) return this.lines(live, now, true);
    }
    const ends = [];
    let pos = 0;
    for (const s of segs) {
      pos += nonSpace(s.text);
      ends.push(pos);
    }
    const out = [];
    pos = 0;
    for (const line of all) {
      pos += nonSpace(line);
      const idx = ends.findIndex((e) => e >= pos);
      out.push({ text: line, at: segs[idx === -1 ? segs.length - 1 : idx].at });
    }
    return out.slice(-this.o.lines);
  }
}

function main() {
  const params = pageParams();
  const o = options(params);
  const box = document.getElementById("captions");
  applyStyle(box, o);
  const roll = new RollUp(o);
  let live = null;
  let allFadedSince = 0;
  const client = new CaptionClient({
    stream: o.stream,
    token: o.token,
    partials: !["false", "0", "no", "off"].includes(String(o.partials).toLowerCase()),
  });
  window.captionClient = client;
  window.overlayOptions = o;

  function render() {
    const now = Date.now();
    const lines = roll.lines(live, now);
    const fadeMs = o.fade * 1000;
    const fresh = lines.filter((l) => !fadeMs || now - l.at < fadeMs);
    if (fadeMs && lines.length && !fresh.length) {
      // Everything has faded out (the CSS transition has run): the next words start a new line
      // rather than continue an old one.
      allFadedSince = allFadedSince || now;
      if (now - allFadedSince > 2000) {
        roll.clear();
        live = null;
        allFadedSince = 0;
      }
    } else {
      allFadedSince = 0;
    }
    while (box.children.length > lines.length) box.lastElementChild.remove();
    while (box.children.length < lines.length) {
      const div = document.createElement("div");
      div.className = "line";
      div.append(document.createElement("span"));
      box.append(div);
    }
    lines.forEach((line, i) => {
      const div = box.children[i];
      const span = div.firstElementChild;
      if (span.textContent !== line.text) span.textContent = line.text; // in place: no flicker
      div.classList.toggle("faded", Boolean(fadeMs) && now - line.at >= fadeMs);
    });
  }

  client.addEventListener("final", (e) => {
    const ev = e.detail.final;
    if (live && client.state.live === null) live = null;
    roll.add(ev.text, Date.now());
    client.state.trim(20);
    render();
  });
  client.addEventListener("partial", (e) => {
    live = { text: e.detail.live.text, at: Date.now() };
    render();
  });
  client.addEventListener("state", (e) => {
    document.documentElement.dataset.state = e.detail.state; // visible to tests, not to viewers
  });
  setInterval(render, 500);
  client.start();
}

main();

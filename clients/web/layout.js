// Caption line layout for the pages: a JavaScript port of streamer/layout.py (same rules, same
// costs, same results; tests/test_web_pages.py checks both give the same lines). Keep the two in step.
//
// - textWidth(s): columns on screen; East Asian wide characters count 2, combining marks 0.
// - wrap(text, maxChars=42, maxLines=2): captions, each a list of at most maxLines lines, broken at
//   sentence / clause / phrase boundaries with balanced lines.
// - rollLines(text, maxChars=42): roll-up lines for live text (earlier lines do not re-flow as
//   the text grows); lastLines(text, maxChars, n): the last n of them (what an overlay shows).
//
// Python uses unicodedata.east_asian_width; here the W/F ranges that matter for captions
// (Hangul, CJK, kana, fullwidth forms, common emoji) are listed.

const WIDE = [
  [0x1100, 0x115f], [0x231a, 0x231b], [0x2329, 0x232a], [0x23e9, 0x23ec], [0x2e80, 0x303e],
  [0x3041, 0x33ff], [0x3400, 0x4dbf], [0x4e00, 0x9fff], [0xa000, 0xa4cf], [0xa960, 0xa97f],
  [0xac00, 0xd7a3], [0xf900, 0xfaff], [0xfe10, 0xfe19], [0xfe30, 0xfe6f], [0xff01, 0xff60],
  [0xffe0, 0xffe6], [0x1f300, 0x1f64f], [0x1f680, 0x1f6ff], [0x1f900, 0x1f9ff],
  [0x20000, 0x2fffd], [0x30000, 0x3fffd],
];
const ZERO = /[\p{Mn}\p{Me}\p{Cf}]/u;

function isWide(cp) {
  for (const [a, b] of WIDE) {
    if (cp < a) return false;
    if (cp <= b) return true;
  }
  return false;
}

function charWidth(ch) {
  if (ZERO.test(ch)) return 0;
  return isWide(ch.codePointAt(0)) ? 2 : 1;
}

export function textWidth(s) {
  let w = 0;
  for (const ch of s) w += charWidth(ch);
  return w;
}

function isHangul(ch) {
  const o = ch.codePointAt(0);
  return (o >= 0xac00 && o <= 0xd7a3) || (o >= 0x1100 && o <= 0x11ff) || (o >= 0x3130 && o <= 0x318f);
}

function breakableWide(ch) {
  return isWide(ch.codePointAt(0)) && !isHangul(ch);
}

const NO_LINE_START = new Set("、。，．！？：；）」』】〕〉》〙〗’”…ー・ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ!?,.:;)]}%");
const NO_LINE_END = new Set("（「『【〔〈《〘〖‘“([{");

function splitWord(word) {
  const pieces = [];
  for (const ch of word) {
    const prev = pieces.length ? Array.from(pieces[pieces.length - 1]).pop() : null;
    if (prev !== null && (breakableWide(ch) || breakableWide(prev)) && !NO_LINE_START.has(ch) && !NO_LINE_END.has(prev)) {
      pieces.push(ch);
    } else if (prev !== null) {
      pieces[pieces.length - 1] += ch;
    } else {
      pieces.push(ch);
    }
  }
  return pieces;
}

function tokens(text) {
  const out = [];
  for (const word of text.split(/\s+/)) {
    if (!word) continue;
    splitWord(word).forEach((piece, i) => {
      out.push({ text: piece, space: i === 0 && out.length > 0, width: textWidth(piece) });
    });
  }
  return out;
}

function join(toks) {
  return toks.map((t, i) => (t.space && i ? " " : "") + t.text).join("");
}

class Widths {
  constructor(toks) {
    this.toks = toks;
    this.cum = [0];
    for (const t of toks) this.cum.push(this.cum[this.cum.length - 1] + t.width + (t.space ? 1 : 0));
  }
  span(i, j) {
    return this.cum[j] - this.cum[i] - (this.toks[i].space ? 1 : 0);
  }
  fits(i, j, maxChars) {
    return j - i === 1 || this.span(i, j) <= maxChars;
  }
}

const SENTENCE_END = new Set(".!?…。！？");
const CLAUSE_END = new Set(",;:—–、，；：");
const CLOSERS = "\"'”’)]}」』）»";
const ABBREVIATIONS = new Set(["mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "vs.", "etc.", "e.g.", "i.e.", "no.", "jr.", "sr."]);
const EN_CONJUNCTIONS = new Set([
  "and", "but", "or", "nor", "so", "yet", "because", "although", "though", "while", "whereas",
  "if", "unless", "until", "when", "whenever", "where", "wherever", "since", "that", "which",
  "who", "whom", "whose", "what", "then", "than", "how", "why", "whether",
]);
const EN_PHRASE_STARTS = new Set([
  "of", "in", "on", "at", "to", "for", "with", "from", "by", "about", "into", "onto", "over",
  "under", "between", "through", "during", "without", "within", "against", "among", "across",
  "around", "behind", "beyond", "toward", "towards", "upon", "like", "per", "via", "near", "as",
  "after", "before",
  "a", "an", "the", "this", "these", "those", "my", "your", "his", "her", "its", "our", "their",
  "some", "any", "every", "each", "no", "all", "both",
]);
const EN_NO_BREAK_AFTER = new Set([
  "a", "an", "the", "this", "these", "those", "my", "your", "his", "her", "its", "our", "their",
  "of", "in", "on", "at", "to", "for", "with", "from", "by", "into", "onto", "and", "but", "or",
  "mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "very", "not", "i", "we", "you", "they", "he", "she",
]);
const KO_CONNECTIVE = [
  "지만", "는데", "은데", "니까", "면서", "거나", "든지", "아서", "어서", "려고", "도록",
  "다가", "으며", "으면", "라서", "므로", "고", "며", "면", "서", "나", "니", "요", "다",
];
const KO_PARTICLE = [
  "에서", "에게", "한테", "께서", "으로", "까지", "부터", "처럼", "보다", "마다", "이나",
  "은", "는", "이", "가", "을", "를", "에", "와", "과", "로", "도", "만", "의",
];

const COST = { sentence: 0, clause: 1, conjunction: 1.5, phrase: 3, koParticle: 3, plain: 5, cjk: 4, bad: 9 };

function rstripChars(s, chars) {
  const arr = Array.from(s);
  while (arr.length && chars.includes(arr[arr.length - 1])) arr.pop();
  return arr.join("");
}

function stripChars(s, chars) {
  const arr = Array.from(s);
  while (arr.length && chars.includes(arr[arr.length - 1])) arr.pop();
  while (arr.length && chars.includes(arr[0])) arr.shift();
  return arr.join("");
}

function breakCost(prev, nxt) {
  const bare = rstripChars(prev.text, CLOSERS);
  const chars = Array.from(bare);
  const last = chars.length ? chars[chars.length - 1] : "";
  const low = bare.toLowerCase();
  if (SENTENCE_END.has(last) && !ABBREVIATIONS.has(low)) return COST.sentence;
  if (CLAUSE_END.has(last)) return COST.clause;
  if (!nxt.space) return COST.cjk;
  if (EN_NO_BREAK_AFTER.has(low) || ABBREVIATIONS.has(low)) return COST.bad;
  const following = stripChars(nxt.text.toLowerCase(), "\"'“‘(");
  if (EN_CONJUNCTIONS.has(following)) return COST.conjunction;
  if (EN_PHRASE_STARTS.has(following)) return COST.phrase;
  if (last && isHangul(last)) {
    if (KO_CONNECTIVE.some((e) => bare.endsWith(e))) return COST.conjunction;
    if (KO_PARTICLE.some((e) => bare.endsWith(e))) return COST.koParticle;
  }
  return COST.plain;
}

const BALANCE_WEIGHT = 6.0;
const CAPTION_COST = 10.0;
const CAPTION_BREAK_WEIGHT = 3.0;

function bestLines(ws, i, j, maxChars, maxLines, costs) {
  if (ws.fits(i, j, maxChars)) return [0, [i]];
  if (maxLines < 2) return null;
  let best = null;
  const search = (start, starts, cost) => {
    if (starts.length === maxLines - 1 || ws.fits(start, j, maxChars)) {
      if (!ws.fits(start, j, maxChars)) return;
      const all = [...starts, start];
      const bounds = [...all, j];
      const widths = all.map((a, k) => ws.span(a, bounds[k + 1]));
      const spread = (Math.max(...widths) - Math.min(...widths)) / maxChars;
      const total = cost + BALANCE_WEIGHT * spread * spread;
      if (best === null || total < best[0]) best = [total, all];
      if (starts.length === maxLines - 1) return;
    }
    for (let k = start + 1; k < j; k++) {
      if (!ws.fits(start, k, maxChars)) break;
      search(k, [...starts, start], cost + costs[k - 1]);
    }
  };
  search(i, [], 0);
  return best;
}

function layout(toks, maxChars, maxLines) {
  const n = toks.length;
  if (!n) return [];
  maxChars = Math.max(1, maxChars);
  maxLines = Math.max(1, maxLines);
  const costs = [];
  for (let k = 0; k < n - 1; k++) costs.push(breakCost(toks[k], toks[k + 1]));
  const ws = new Widths(toks);
  const limit = maxLines * (maxChars + 1);
  const best = new Array(n + 1).fill(Infinity);
  const back = new Array(n + 1).fill(null);
  best[n] = 0;
  for (let i = n - 1; i >= 0; i--) {
    let width = 0;
    for (let j = i + 1; j <= n; j++) {
      width += toks[j - 1].width + (j - 1 > i ? 1 : 0);
      if (j - i > 1 && width > limit) break;
      const lines = bestLines(ws, i, j, maxChars, maxLines, costs);
      if (lines === null) continue;
      const endCost = j === n ? 0 : CAPTION_BREAK_WEIGHT * costs[j - 1];
      const total = CAPTION_COST + lines[0] + endCost + best[j];
      if (total < best[i]) {
        best[i] = total;
        back[i] = [j, lines[1]];
      }
    }
  }
  const captions = [];
  let i = 0;
  while (i < n) {
    const [j, starts] = back[i];
    const bounds = [...starts, j];
    captions.push(starts.map((a, k) => toks.slice(a, bounds[k + 1])));
    i = j;
  }
  return captions;
}

export function wrap(text, maxChars = 42, maxLines = 2) {
  return layout(tokens(text), maxChars, maxLines).map((caption) => caption.map(join));
}

const SHORT_LINE_WEIGHT = 6.0;

export function rollLines(text, maxChars = 42) {
  const toks = tokens(text);
  const ws = new Widths(toks);
  const lines = [];
  const n = toks.length;
  let start = 0;
  while (start < n) {
    let end = start + 1;
    while (end < n && ws.fits(start, end + 1, maxChars)) end++;
    if (end < n) {
      let bestK = end;
      let bestCost = Infinity;
      for (let k = end; k > start; k--) {
        const room = (maxChars - ws.span(start, k)) / maxChars;
        const cost = breakCost(toks[k - 1], toks[k]) + SHORT_LINE_WEIGHT * room;
        if (cost < bestCost) {
          bestK = k;
          bestCost = cost;
        }
      }
      end = bestK;
    }
    lines.push(join(toks.slice(start, end)));
    start = end;
  }
  return lines;
}

export function lastLines(text, maxChars = 42, n = 2) {
  if (n <= 0) return [];
  return rollLines(text, maxChars).slice(-n);
}

"""Pure transcript formatting: finals in, text out (TXT, SRT, WebVTT, JSON, JSONL).

Cue times are the finals' `start`/`end` on the stream's audio clock, so a transcript of a live
session lines up with a recording of that session started at the same moment. Finals with empty
text are kept in JSON/JSONL (they still carry a `seq`) but produce no cue or line elsewhere.

SRT and WebVTT cues follow the caption layout rules (`streamer.layout`: 42 columns, 2 lines, phrase
boundaries, reading-rate display time without overlaps). `SubtitleWriter` produces them as finals
arrive; the whole-document functions (`format_srt`, ...) are built on it, so a file written cue by
cue equals the document formatted at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from streamer.events import Final
from streamer.layout import DEFAULT as DEFAULT_LAYOUT
from streamer.layout import Cue, Layout, cues_from_text, cues_from_words

VTT_HEADER = "WEBVTT\n\n"


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_time(seconds: float) -> str:
    """`HH:MM:SS,mmm` (negative times clamp to zero)."""
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    """`HH:MM:SS.mmm` (negative times clamp to zero)."""
    return _clock(seconds, ".")


def _one_line(text: str) -> str:
    # A blank line ends a cue in SRT and VTT, so a caption must never contain one.
    return " ".join(text.split())


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def final_cues(
    finals: Sequence[Final], rules: Layout = DEFAULT_LAYOUT, *, next_start: float | None = None
) -> list[Cue]:
    """The caption cues of finals that follow each other (one utterance), laid out together.

    Timed by their words when those spell the text (Whisper word timestamps), else by sharing
    the finals' time among the captions in proportion to their width.
    """
    items = [f for f in finals if _one_line(f.text)]
    if not items:
        return []
    text = " ".join(_one_line(f.text) for f in items)
    words = [w for f in items for w in f.words if w.word.strip()]
    spelled = " ".join(_one_line("".join(w.word for w in f.words)) for f in items)
    if words and spelled == text:
        return cues_from_words(
            words,
            rules.max_chars,
            rules.max_lines,
            rules.max_cps,
            rules.min_duration,
            rules.max_duration,
            next_start=next_start,
        )
    start = max(0.0, items[0].start)
    return cues_from_text(text, start, max(start, items[-1].end), rules, next_start=next_start)


class SubtitleWriter:
    """Finals in, SRT or WebVTT text out, cue by cue (pure: no I/O).

    The finals of one utterance (protocol 2: several, the `last` one closing it) are laid out
    together, so captions are not cut where a final happened to settle. An utterance's cues are
    written once the next final shows it is over and where the next caption begins: display time
    (reading rate, minimum duration) may stretch a cue only up to there, so captions never overlap.
    A file written from `feed` as finals arrive therefore lags one utterance behind, and
    `header() + feeds + flush()` is exactly the whole document (`format_srt`, `format_vtt`).
    """

    def __init__(self, kind: Literal["srt", "vtt"], rules: Layout = DEFAULT_LAYOUT) -> None:
        self.kind = kind
        self.rules = rules
        self.count = 0  # cues written so far
        self._pending: list[Final] = []
        self._closed = False

    def header(self) -> str:
        return VTT_HEADER if self.kind == "vtt" else ""

    def feed(self, final: Final) -> str:
        out = ""
        if self._pending:
            head = self._pending[0]
            if self._closed or (head.stream, head.utterance) != (final.stream, final.utterance):
                if _one_line(final.text):
                    out = self._render(self._pending, next_start=final.start)
                    self._pending = []
                elif head.stream != final.stream:
                    out = self.flush()
        if _one_line(final.text):
            self._pending.append(final)
            self._closed = final.last
        elif final.last and self._pending and self._pending[0].utterance == final.utterance:
            self._closed = True
        return out

    def flush(self) -> str:
        held, self._pending = self._pending, []
        return self._render(held, next_start=None) if held else ""

    def _render(self, finals: Sequence[Final], next_start: float | None) -> str:
        out: list[str] = []
        for cue in final_cues(finals, self.rules, next_start=next_start):
            self.count += 1
            if self.kind == "srt":
                out.append(f"{self.count}\n{srt_time(cue.start)} --> {srt_time(cue.end)}\n{cue.text}\n\n")
            else:
                text = _vtt_escape(cue.text)
                out.append(f"{self.count}\n{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n{text}\n\n")
        return "".join(out)


def jsonl_line(final: Final) -> str:
    return final.to_json() + "\n"


def txt_line(final: Final) -> str:
    text = _one_line(final.text)
    return text + "\n" if text else ""


def format_txt(finals: Iterable[Final]) -> str:
    """Plain text, one final per line."""
    return "".join(txt_line(f) for f in finals)


def format_subtitles(
    kind: Literal["srt", "vtt"], finals: Iterable[Final], rules: Layout = DEFAULT_LAYOUT
) -> str:
    """The whole SRT or WebVTT document of `finals` (see SubtitleWriter)."""
    w = SubtitleWriter(kind, rules)
    return w.header() + "".join(w.feed(f) for f in finals) + w.flush()


def format_srt(finals: Iterable[Final], rules: Layout = DEFAULT_LAYOUT) -> str:
    """SubRip: cues numbered 1, 2, 3 ... laid out by streamer.layout (a final may give several)."""
    return format_subtitles("srt", finals, rules)


def format_vtt(finals: Iterable[Final], rules: Layout = DEFAULT_LAYOUT) -> str:
    """WebVTT, cues numbered 1, 2, 3 ... like SRT."""
    return format_subtitles("vtt", finals, rules)


def format_jsonl(finals: Iterable[Final]) -> str:
    """One final event per line, exactly as the WebSocket and MQTT sinks send it."""
    return "".join(jsonl_line(f) for f in finals)


def format_json(finals: Sequence[Final] | Iterable[Final]) -> str:
    """One JSON document, shaped like faster-whisper's output: text, language, segments + words."""
    items = [f for f in finals if f.text]
    langs = Counter(f.lang for f in items if f.lang)
    doc = {
        "text": " ".join(f.text for f in items),
        "language": langs.most_common(1)[0][0] if langs else None,
        "segments": [
            {
                "seq": f.seq,
                "start": f.start,
                "end": f.end,
                "text": f.text,
                "lang": f.lang,
                "words": [w.model_dump(mode="json") for w in f.words],
            }
            for f in items
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


FORMATTERS = {
    "txt": format_txt,
    "srt": format_srt,
    "vtt": format_vtt,
    "json": format_json,
    "jsonl": format_jsonl,
}


def format_as(kind: str, finals: Iterable[Final], rules: Layout = DEFAULT_LAYOUT) -> str:
    """`finals` in format `kind` (a FORMATTERS key); SRT and WebVTT laid out by `rules`."""
    if kind in ("srt", "vtt"):
        return format_subtitles(kind, finals, rules)  # type: ignore[arg-type]
    return FORMATTERS[kind](finals)


MEDIA_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}

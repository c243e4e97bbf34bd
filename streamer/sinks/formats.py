"""Pure transcript formatting: finals in, text out (TXT, SRT, WebVTT, JSON, JSONL).

Cue times are the finals' `start`/`end` on the stream's audio clock, so a transcript of a live
session lines up with a recording of that session started at the same moment. Finals with empty
text are kept in JSON/JSONL (they still carry a `seq`) but produce no cue or line elsewhere.

The whole-document functions (`format_srt`, ...) and the per-cue ones (`srt_cue`, ...) produce the
same bytes, so a file written cue by cue as finals arrive equals the document formatted at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

from streamer.events import Final

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


def _cue_times(final: Final) -> tuple[float, float]:
    start = max(0.0, final.start)
    # Players skip zero-length cues; give such a cue a visible minimum.
    end = final.end if final.end > start else start + 0.5
    return start, end


def srt_cue(index: int, final: Final) -> str:
    """One SRT cue (numbered `index`), or "" for a final without text."""
    text = _one_line(final.text)
    if not text:
        return ""
    start, end = _cue_times(final)
    return f"{index}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n\n"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_cue(final: Final) -> str:
    """One WebVTT cue (identified by the final's `seq`), or "" for a final without text."""
    text = _vtt_escape(_one_line(final.text))
    if not text:
        return ""
    start, end = _cue_times(final)
    return f"{final.seq}\n{vtt_time(start)} --> {vtt_time(end)}\n{text}\n\n"


def jsonl_line(final: Final) -> str:
    return final.to_json() + "\n"


def txt_line(final: Final) -> str:
    text = _one_line(final.text)
    return text + "\n" if text else ""


def format_txt(finals: Iterable[Final]) -> str:
    """Plain text, one final per line."""
    return "".join(txt_line(f) for f in finals)


def format_srt(finals: Iterable[Final]) -> str:
    """SubRip: cues numbered 1, 2, 3 ... over the finals that have text."""
    out: list[str] = []
    for f in finals:
        cue = srt_cue(len(out) + 1, f)
        if cue:
            out.append(cue)
    return "".join(out)


def format_vtt(finals: Iterable[Final]) -> str:
    """WebVTT with one cue per final that has text (cue identifier = seq)."""
    return VTT_HEADER + "".join(vtt_cue(f) for f in finals)


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

MEDIA_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}

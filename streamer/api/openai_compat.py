"""OpenAI audio API shapes (sans-I/O): form fields in, options or an error out; finals in, a body out.

Field names, error JSON and response formats follow the OpenAI API reference for
`POST /v1/audio/transcriptions` and `/v1/audio/translations`, so the official clients and the
many tools written against them work unchanged.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streamer.config import LANGUAGES
from streamer.events import Final
from streamer.layout import Layout
from streamer.sinks import formats

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
# Names OpenAI clients send by default; they mean "the daemon's own model".
DEFAULT_MODEL_ALIASES = frozenset({"whisper-1", "default", "streamer"})
Task = Literal["transcribe", "translate"]


class ApiError(Exception):
    """An error answered as OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class TranscribeOptions:
    model: str
    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    response_format: str = "json"
    granularities: frozenset[str] = field(default_factory=lambda: frozenset({"segment"}))
    stream: bool = False

    def to_doc(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["granularities"] = sorted(self.granularities)
        return d

    @classmethod
    def from_doc(cls, d: Mapping[str, Any]) -> TranscribeOptions:
        return cls(**{**d, "granularities": frozenset(d.get("granularities", ["segment"]))})


def _one(fields: Mapping[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1] if values else None


def _bool(raw: str, param: str) -> bool:
    v = raw.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ApiError(400, f"'{param}' must be true or false, got {raw[:40]!r}.", param=param)


def parse_form(fields: Mapping[str, list[str]], task: Task, *, jobs: bool = False) -> TranscribeOptions:
    """Validate the form's text fields (the file is checked by the caller)."""
    model = (_one(fields, "model") or "").strip()
    if not model:
        raise ApiError(
            400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    language = (_one(fields, "language") or "").strip().lower() or None
    if task == "translate" and language is not None:
        raise ApiError(400, "Unrecognized request argument supplied: language", param="language")
    if language is not None and LANGUAGES and language not in LANGUAGES:
        raise ApiError(
            400,
            f"Language '{language[:20]}' is not supported; use an ISO-639-1 code such as 'en' or 'ko'.",
            param="language",
            code="unsupported_language",
        )
    temperature: float | None = None
    raw_t = _one(fields, "temperature")
    if raw_t is not None and raw_t.strip():
        try:
            temperature = float(raw_t)
        except ValueError:
            temperature = -1.0
        if not 0.0 <= temperature <= 1.0:
            raise ApiError(
                400, f"'temperature' must be a number from 0 to 1, got {raw_t[:40]!r}.", param="temperature"
            )
    fmt = (_one(fields, "response_format") or "json").strip()
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"Unsupported response_format {fmt[:40]!r}; expected one of: {', '.join(RESPONSE_FORMATS)}.",
            param="response_format",
            code="unsupported_value",
        )
    grans = set(fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", []))
    unknown = grans - set(GRANULARITIES)
    if unknown:
        raise ApiError(
            400,
            f"Unsupported timestamp_granularities {sorted(unknown)!r}; expected segment and/or word.",
            param="timestamp_granularities",
        )
    if grans and fmt != "verbose_json":
        raise ApiError(
            400,
            "timestamp_granularities needs response_format 'verbose_json'.",
            param="timestamp_granularities",
        )
    stream = _bool(_one(fields, "stream") or "", "stream")
    if stream and jobs:
        raise ApiError(400, "Jobs are not streamed; poll GET /v1/jobs/{id} instead.", param="stream")
    if stream and fmt not in ("json", "text"):
        raise ApiError(
            400, f"response_format {fmt!r} is not supported with stream=true.", param="response_format"
        )
    prompt = _one(fields, "prompt")
    return TranscribeOptions(
        model=model,
        task=task,
        language=language,
        prompt=prompt.strip()[:2000] if prompt and prompt.strip() else None,
        temperature=temperature,
        response_format=fmt,
        granularities=frozenset(grans or {"segment"}),
        stream=stream,
    )


def full_text(finals: Sequence[Final]) -> str:
    return " ".join(f.text.strip() for f in finals if f.text.strip())


def _language(finals: Sequence[Final], fallback: str | None) -> str:
    langs = [f.lang for f in finals if f.lang]
    return max(set(langs), key=langs.count) if langs else (fallback or "en")


def _avg_logprob(f: Final) -> float:
    probs = [max(w.probability, 1e-6) for w in f.words]
    return round(sum(math.log(p) for p in probs) / len(probs), 4) if probs else 0.0


def _compression_ratio(text: str) -> float:
    # Whisper's definition: UTF-8 bytes over zlib-compressed bytes.
    data = text.encode()
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def render(
    opts: TranscribeOptions, finals: Sequence[Final], duration: float, layout: Layout
) -> tuple[str, str]:
    """(body, content type) of a finished transcription in opts.response_format."""
    items = [f for f in finals if f.text.strip()]
    fmt = opts.response_format
    if fmt == "text":
        return full_text(items) + "\n", "text/plain; charset=utf-8"
    if fmt in ("srt", "vtt"):
        return formats.format_as(fmt, items, layout), formats.MEDIA_TYPES[fmt]
    if fmt == "json":
        return json.dumps({"text": full_text(items)}, ensure_ascii=False), "application/json"
    doc: dict[str, Any] = {
        "task": opts.task,
        "language": _language(items, opts.language),
        "duration": round(duration, 3),
        "text": full_text(items),
    }
    if "segment" in opts.granularities:
        doc["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": round(f.start, 3),
                "end": round(f.end, 3),
                "text": " " + f.text.strip(),
                "tokens": [],  # token ids are not kept by the pipeline
                "temperature": opts.temperature or 0.0,
                "avg_logprob": _avg_logprob(f),
                "compression_ratio": _compression_ratio(f.text),
                "no_speech_prob": None,  # segments that failed the no-speech test were filtered out
            }
            for i, f in enumerate(items)
        ]
    if "word" in opts.granularities:
        doc["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for f in items
            for w in f.words
        ]
    return json.dumps(doc, ensure_ascii=False), "application/json"


def sse(doc: Mapping[str, Any]) -> bytes:
    """One server-sent event as OpenAI streams transcriptions: a `data:` line of JSON."""
    return b"data: " + json.dumps(doc, ensure_ascii=False).encode() + b"\n\n"


def delta_event(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": text}


def done_event(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": text}

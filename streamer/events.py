"""The one event model. Every sink (terminal, WebSocket, MQTT, files) serialises these.

Times (`start`, `end`, `emitted_at`, word times) are seconds on the stream's audio clock: samples
captured since the stream started divided by 16 000. Latency is therefore `emitted_at - end`,
independent of wall time. See docs/protocol.md.

Protocol 2: words settle while the speaker is still talking.

- An utterance (one VAD speech segment) yields one or more **finals**, each a run of settled
  words in order. A final never changes once emitted; the last final of an utterance has
  `last = true` (end of speech closed it). Finals carry `seq` = 1, 2, 3 ... per stream with no gaps,
  so a subscriber can detect a missed final and a reconnecting client can ask for everything after
  the last `seq` it saw.
- A **partial** carries only the unsettled tail of the open utterance: the words after its last
  final. Its `stable` is a prefix of its `text` that is settled too (it will open the next final
  word for word); the rest may still change. A partial carries the `seq` the next final will have,
  and `rev` counts events within the utterance, so (`seq`, `rev`) orders them.
- A client appends each final and replaces the live tail with each partial; nothing else. After a
  final that does not end its utterance, the daemon sends a partial with the remaining tail (possibly
  empty), so a display never shows the same words twice.
- Settled words (in a final, or in a partial's `stable`) are never revised.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 2


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str  # narrowed to a Literal by each event; declared here so it is serialised first

    def to_json(self) -> str:
        return self.model_dump_json()


class Word(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    word: str = Field(description="The word as Whisper wrote it, with its leading space if any.")
    start: float = Field(description="Seconds on the stream's audio clock.")
    end: float = Field(description="Seconds on the stream's audio clock.")
    probability: float = Field(ge=0.0, le=1.0)


class Hello(_Event):
    type: Literal["hello"] = "hello"
    protocol: int = PROTOCOL_VERSION
    server: str = Field(description="streamer version")
    streams: list[str]
    model: str
    language: str | None = Field(description="Fixed language, or null when detected per utterance.")
    task: Literal["transcribe", "translate"]
    session: str = Field(
        default="",
        description="Random id of this daemon run. `seq` restarts at 1 when it changes (a restart): "
        "a reconnecting client that sees a new session resumes from the start, not from its old `since`.",
    )


class _Caption(_Event):
    stream: str
    utterance: int = Field(ge=0, description="Utterance number within the stream (VAD segment).")
    rev: int = Field(ge=0, description="Revision number of the text within the utterance.")
    seq: int = Field(
        ge=1, description="Final number (finals: 1, 2, 3 ... without gaps); a partial previews the next one."
    )
    text: str = Field(
        description="Final: the settled run of words. Partial: the unsettled tail of the utterance after "
        "its last final (may be empty)."
    )
    stable: str = Field(
        description="Prefix of `text` that is settled and never changes (a final's `stable` is its text)."
    )
    start: float
    end: float
    lang: str | None = None
    emitted_at: float = Field(description="Audio-clock position when the event was produced.")


class Partial(_Caption):
    type: Literal["partial"] = "partial"


class Final(_Caption):
    type: Literal["final"] = "final"
    last: bool = Field(default=True, description="This final closes its utterance (end of speech).")
    words: list[Word] = Field(default_factory=list)
    lang_probability: float | None = None


class Status(_Event):
    """A change in a stream's state (started, stopped, source error, audio dropped)."""

    type: Literal["status"] = "status"
    stream: str
    state: Literal["starting", "running", "retrying", "stopped", "error"]
    detail: str = ""
    degraded: int = Field(
        default=0,
        ge=0,
        description="Decoder load level: 0 normal, 1 cheaper finals, 2 partials thinned, 3 finals only.",
    )
    emitted_at: float = 0.0


Caption = Annotated[Partial | Final, Field(discriminator="type")]
Event = Annotated[Hello | Partial | Final | Status, Field(discriminator="type")]

_event_adapter: TypeAdapter[Hello | Partial | Final | Status] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> Hello | Partial | Final | Status:
    """Parse one event from JSON text or a dict (raises pydantic.ValidationError)."""
    if isinstance(data, dict):
        return _event_adapter.validate_python(data)
    return _event_adapter.validate_json(data)


def json_schema() -> dict[str, Any]:
    """JSON Schema of every event (exported to docs/events.schema.json)."""
    return _event_adapter.json_schema()


def dump_schema() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"

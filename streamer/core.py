"""The stream core: everything one stream decides, as plain values in and actions out.

    core.feed(t, speech_probability)   one 32 ms VAD frame starting at audio time t
    core.flush(t)                      the audio ended at t
    core.result(request_id, outcome)   a decode finished (a Hypothesis) or raised (a Failure)
    core.load(level)                   the decode engine's degradation level
      -> list[Action]: Submit(DecodeSpec) | Cancel | Emit(Partial | Final | Status) | counts

It holds the segmenter (utterances from speech probabilities), the captioner (text from decode
results, streamer/decode/captioner.py) and the one table of requests in flight (the captioner's).
There are no threads, clocks, model or audio buffers inside: the audio clock is the `t` it is fed,
decodes are requests it hands out and results it is given back, in any order. `pipeline.Stream`
runs it over real audio and a real decoder; the property tests run it over scripted ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from streamer.decode.captioner import (
    Action,
    Cancel,
    Captioner,
    CaptionerOptions,
    Discarded,
    Emit,
    Failed,
    Skipped,
    Submit,
    Suppressed,
)
from streamer.decode.filters import FilterOptions
from streamer.decode.hypothesis import Hypothesis
from streamer.decode.scheduler import level as level_of
from streamer.events import Status
from streamer.options import from_settings
from streamer.vad.segmenter import FRAME_SECONDS, Segmenter, SegmenterOptions, SpeechEnd, SpeechStart

__all__ = [
    "Action",
    "Cancel",
    "CaptionerOptions",
    "CoreOptions",
    "Discarded",
    "Emit",
    "Failed",
    "Failure",
    "FilterOptions",
    "SegmenterOptions",
    "Skipped",
    "StreamCore",
    "Submit",
    "Suppressed",
]

# Audio kept before the open utterance: the segmenter backdates a start by min_speech + pad.
PREROLL_SECONDS = 3.0


@dataclass(frozen=True)
class Failure:
    """A decode that raised instead of returning a Hypothesis."""

    error: str


@dataclass(frozen=True)
class CoreOptions:
    """One immutable snapshot of what a stream's decisions depend on (swapped whole on reload)."""

    captioner: CaptionerOptions = field(default_factory=CaptionerOptions)
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    filters: FilterOptions = field(default_factory=FilterOptions)
    # A file read as fast as possible: the runner waits for every decode, so decode times and the
    # engine's load must not change any decision (the text is the same on any machine).
    lockstep: bool = False

    @classmethod
    def from_settings(cls, settings: object, stream: str, lockstep: bool) -> CoreOptions:
        return cls(
            # In lockstep the final is asked for at the end of speech anyway: nothing to win.
            captioner=from_settings(CaptionerOptions, settings, stream=stream, speculative=not lockstep),
            segmenter=from_settings(SegmenterOptions, settings),
            filters=from_settings(FilterOptions, settings),
            lockstep=lockstep,
        )


class StreamCore:
    def __init__(self, options: CoreOptions | None = None) -> None:
        self.options = options or CoreOptions()
        self.segmenter = Segmenter(self.options.segmenter)
        self.captioner = Captioner(self.options.captioner, self.options.filters)
        self.now = 0.0  # audio clock: end of the last frame fed
        self.level = 0
        self._pending_end: float | None = None  # silence running after speech (segmenter)
        self._last_decode_seconds = 0.0

    # -- inputs --------------------------------------------------------------------------------

    def reconfigure(self, options: CoreOptions) -> None:
        """A new snapshot applies from the next decision on; what is settled stays settled."""
        self.options = options
        self.segmenter.opts = options.segmenter
        self.captioner.o = options.captioner
        self.captioner.filters = options.filters

    def feed(self, t: float, speech_probability: float) -> list[Action]:
        """One VAD frame: its speech probability, for the frame starting at audio time `t`."""
        self.now = max(self.now, t + FRAME_SECONDS)
        actions: list[Action] = []
        for ev in self.segmenter.feed(speech_probability, t):
            actions += self._on_segment(ev)
        actions += self._tick()
        return actions

    def flush(self, t: float) -> list[Action]:
        """The audio ended at `t`: close the open utterance (its final is still to be decoded)."""
        self.now = max(self.now, t)
        actions: list[Action] = []
        for ev in self.segmenter.flush(t):
            actions += self._on_segment(ev)
        return actions

    def result(self, request_id: int, outcome: Hypothesis | Failure) -> list[Action]:
        if isinstance(outcome, Failure):
            return self.captioner.on_failure(request_id, self.now, outcome.error)
        if not self.options.lockstep:
            self._last_decode_seconds = outcome.decode_seconds
        actions = self.captioner.on_result(request_id, outcome, self.now)
        # Discarded results are counted with the kind of the decode they came from.
        return [replace(a, kind=outcome.kind) if isinstance(a, Discarded) else a for a in actions]

    def load(self, level: int) -> list[Action]:
        """The engine's degradation level; a change is announced once as a Status event."""
        if level == self.level or self.options.lockstep:
            return []
        self.level = self.captioner.level = level
        detail = f"decoder degraded: level {level} ({level_of(level).name})" if level else ""
        status = Status(
            stream=self.options.captioner.stream,
            state="running",
            detail=detail,
            degraded=level,
            emitted_at=round(self.now, 3),
        )
        return [Emit(status)]

    # -- what the runner asks --------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No decode in flight: after `flush`, the stream is done."""
        return self.captioner.inflight == 0

    @property
    def finals_emitted(self) -> int:
        return self.captioner.finals_emitted

    @property
    def speech_seconds(self) -> float:
        return self.segmenter.speech_seconds

    def keep_from(self) -> float:
        """Audio before this time is needed by no decode now or later."""
        return self.captioner.keep_from(self.now, PREROLL_SECONDS)

    # -- decisions -------------------------------------------------------------------------------

    def _on_segment(self, ev: SpeechStart | SpeechEnd) -> list[Action]:
        self._pending_end = None
        if isinstance(ev, SpeechStart):
            return self.captioner.on_speech_start(ev.start, self.now)
        return self.captioner.on_speech_end(ev.end, self.now)

    def _tick(self) -> list[Action]:
        actions: list[Action] = []
        pending_end = self.segmenter.pending_end
        # Silence running (the speculative final is asked for once its audio is there), or speech
        # that resumed after it.
        if pending_end is not None or self._pending_end is not None:
            actions += self.captioner.on_silence(pending_end, self.now)
            self._pending_end = pending_end
        actions += self.captioner.on_tick(self.now, self._last_decode_seconds)
        return actions

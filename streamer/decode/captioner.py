"""The caption policy of one stream, as a state machine free of threads, clocks and the model.

The stream loop (pipeline.Stream) feeds it what happened and carries out what it returns:

    on_speech_start(start, now)       the segmenter opened an utterance
    on_speech_end(end, now)           ... and closed it
    on_silence(pending_end, now)      silence began (pending_end) or speech resumed (None)
    on_tick(now, last_decode_seconds) audio advanced
    on_result(request_id, hyp, now)   a decode finished (in any order)
    on_failure(request_id, now)       a decode raised
      -> list[Submit | Cancel | Emit | ...]

`level` (set by the stream core from the engine's load) is the degradation level every request
follows (streamer/decode/scheduler.py, LEVELS).

How text is decided (protocol 2: several finals per utterance, the partial is the unsettled tail):

- Every `step` seconds the window from a little before the first unsettled word to "now" is decoded
  (one decode serves both the display and the commit decision). The window starts `left_context`
  seconds before that word, so the decoder hears what came before it (a sentence after a short
  pause is not decoded cold); the words of the window that restate settled ones are recognised by
  aligning text and times (streamer/decode/align.py) and dropped. The settled text before the
  window is the prompt.
- LocalAgreement-2: the words that two consecutive decodes agree on, after the settled ones, are
  committed as a final at once, provided both decodes heard at least `commit_margin` seconds of
  audio after them. A committed word is never revised: later decodes only ever add after it.
- The unsettled rest is the partial (`text`); `stable` is always empty, since an agreed word is
  committed instead of being held as stable.
- End of speech closes the utterance: the window up to the speech end is decoded at final quality
  (beam search and temperature fallback for long enough windows; the encoder context sized to the
  window as for steps, since tens of seconds of padding after the speech are where Whisper loops
  and invents sign-offs) and what it adds after the settled words is the utterance's last final
  (`last=True`). That decode may start speculatively as soon as silence begins; if speech resumes,
  it is cancelled or its result discarded. Both follow the current degradation level.
- A decode that fails is not fatal: a failed step is simply followed by the next one; a failed
  final closes the utterance with what was settled.
- At most one decode per stream is useful at a time: a new request makes an older in-flight one
  obsolete (cancelled if not started, its result discarded otherwise, both counted), so a slow
  machine gets fewer, later decodes and never a backlog.
- Degradation: see LEVELS in streamer/decode/scheduler.py (cheaper finals, then thinner steps,
  then finals only).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from streamer.decode.align import new_words_start
from streamer.decode.filters import (
    FilterOptions,
    filter_segments,
    is_invented_phrase,
    trim_invented_tail,
)
from streamer.decode.hypothesis import NO_SPACE_LANGUAGES, Hypothesis, HypWord, join_words, norm_word
from streamer.decode.scheduler import level as level_of
from streamer.events import Final, Partial, Status, Word
from streamer.options import setting

# A decode needs this much audio after the first unsettled word to say anything useful.
MIN_STEP_AUDIO = 0.4
# Per-utterance language detection stops once a window of 3 s or more is this sure.
LOCK_LANGUAGE_PROBABILITY = 0.7
# Settled words passed as the prompt are cut to this many characters (Whisper's prompt is 224 tokens).
PROMPT_CHARS = 400
# A settled word ending this close after the window start still counts as before it (prompt).
BOUNDARY_TOLERANCE = 0.05


def _tuple_or_none(v: list[str] | None) -> tuple[str, ...] | None:
    return tuple(v) if v else None


@dataclass(frozen=True)
class CaptionerOptions:
    stream: str = "main"
    step: float = setting("decoder.step", 0.5)
    # Emit partial events (step decodes run anyway: they decide commits).
    partials: bool = setting("decoder.partials", True)
    # Commit agreed words mid-utterance; False: finals only at end of speech.
    agreement: bool = setting("decoder.agreement", True)
    holdback: int = setting("decoder.holdback", 0)  # last agreed words kept back from a commit
    commit_margin: float = setting("decoder.commit_margin", 0.2)  # audio both decodes heard after a word (s)
    # Audio (context before the utterance included) a decode must have heard before it can take
    # part in a commit: decodes of the first second of an utterance agree on wrong words.
    min_commit_audio: float = setting("decoder.min_commit_audio", 4.0)
    # Audio before the first unsettled word in every window (s).
    left_context: float = setting("decoder.left_context", 2.0)
    max_window: float = setting("decoder.max_window", 15.0)  # past it the unsettled words are forced out
    beam_size: int = setting("decoder.beam_size", 5)  # final decodes
    step_beam_size: int = setting("decoder.partial_beam_size", 1)
    # Encoder context of every decode (s): at least this, or the window + 5 s.
    step_context: float = setting("decoder.partial_context", 15.0)
    # Encoder context of full-quality finals (cheaper finals, when degraded, use step_context).
    final_context: float = setting("decoder.final_context", 30.0)
    language: str | None = setting("decoder.language", None)
    languages: tuple[str, ...] | None = setting("decoder.languages", None, convert=_tuple_or_none)
    initial_prompt: str | None = setting("decoder.initial_prompt", None)
    # Settled words of this many utterances (the open one included) before the window as the prompt.
    context_finals: int = setting("decoder.context_finals", 0)
    task: str = setting("decoder.task", "transcribe")
    hotwords: str | None = setting("decoder.hotwords", None)
    speculative: bool = True


@dataclass(frozen=True)
class DecodeSpec:
    """What to decode: the window [start, end) of the stream's audio and how."""

    id: int
    kind: Literal["step", "final"]
    utterance: int
    start: float
    end: float
    language: str | None
    languages: tuple[str, ...] | None
    prompt: str | None
    beam_size: int
    context: float
    fallback: bool
    task: str = "transcribe"
    hotwords: str | None = None


@dataclass(frozen=True)
class Submit:
    spec: DecodeSpec


@dataclass(frozen=True)
class Cancel:
    request_id: int
    reason: str  # obsolete | superseded | resumed
    kind: str = "any"


@dataclass(frozen=True)
class Emit:
    event: Partial | Final | Status


@dataclass(frozen=True)
class Discarded:
    """A result that arrived for a request made obsolete (counted by the stream)."""

    request_id: int
    reason: str
    kind: str = "any"


@dataclass(frozen=True)
class Suppressed:
    """Words or segments a hallucination filter dropped (counted by the stream)."""

    filter: str
    count: int


@dataclass(frozen=True)
class Skipped:
    """A step decode not made because the decoder is degraded (partials thinned; counted)."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """A decode raised (counted by the stream; the captioner went on without it)."""

    request_id: int
    kind: str
    error: str


Action = Submit | Cancel | Emit | Discarded | Suppressed | Skipped | Failed


@dataclass
class _Utterance:
    number: int
    speech_start: float
    language: str | None
    language_probability: float | None = None
    closed_at: float | None = None
    rev: int = 0
    finals: int = 0  # finals emitted in this utterance
    shown: str = ""  # text of the last partial
    previous: list[HypWord] = field(default_factory=list)  # unsettled words of the last step
    previous_end: float = 0.0  # window end of that step
    speculative: DecodeSpec | None = None
    final_request: int | None = None
    early: Hypothesis | None = None  # the speculative final's result, if it came before the VAD closed
    words: int = 0  # settled words in this utterance


class Captioner:
    def __init__(self, options: CaptionerOptions, filters: FilterOptions | None = None) -> None:
        self.o = options
        self.filters = filters or FilterOptions()
        self._ids = itertools.count(1)
        self._seq = 0
        self._utt_count = 0
        self.utt: _Utterance | None = None
        # Utterances closed whose last final is still being decoded, by number.
        self._closing: dict[int, _Utterance] = {}
        self._inflight: dict[int, DecodeSpec] = {}
        # Settled words of the stream with their utterance number (for the prompt and to recognise
        # them in later decodes).
        self._settled: deque[tuple[int, HypWord]] = deque(maxlen=200)
        self.boundary = 0.0  # audio time up to which words are settled
        self._last_speech_end: float | None = None  # end of the previous utterance
        self._last_step = -1e9  # audio time of the last step request
        self._skipped = 0  # steps skipped since the last one that ran (degradation)
        self.level = 0  # degradation level every new request follows (scheduler.LEVELS)

    # -- what the stream asks ------------------------------------------------------------------

    @property
    def finals_emitted(self) -> int:
        return self._seq

    @property
    def inflight(self) -> int:
        """Requests whose result the captioner still waits for."""
        return len(self._inflight)

    def kind_of(self, request_id: int) -> str | None:
        spec = self._inflight.get(request_id)
        return None if spec is None else spec.kind

    def keep_from(self, now: float, preroll: float) -> float:
        """Audio before this time is no longer needed by any decode (`preroll`: how far back the
        segmenter may date the start of the next utterance)."""
        starts = [s.start for s in self._inflight.values()]
        first = max(self.boundary, self.utt.speech_start) if self.utt else now - preroll
        starts.append(self._window_start(first))
        return min(starts)

    # -- events ------------------------------------------------------------------------------

    def on_speech_start(self, start: float, now: float) -> list[Action]:
        self._utt_count += 1
        self.utt = _Utterance(self._utt_count, max(start, 0.0), self.o.language)
        self._last_step = -1e9
        return []

    def on_silence(self, pending_end: float | None, now: float) -> list[Action]:
        """Silence began at `pending_end` (not yet long enough to end the utterance), or speech
        resumed (None). Starts the final decode early; cancels it when speech resumes."""
        utt = self.utt
        if utt is None:
            return []
        spec = utt.speculative
        if pending_end is None:
            if spec is None:
                return []
            utt.speculative, utt.early = None, None
            return self._obsolete(spec.id, "resumed")
        if not self.o.speculative or now < pending_end:
            return []
        if spec is not None and abs(spec.end - pending_end) < 1e-6:
            return []
        actions: list[Action] = []
        if spec is not None:
            actions += self._obsolete(spec.id, "superseded")
            utt.early = None
        new = self._final_spec(utt, pending_end)
        utt.speculative = new
        actions += self._drop_steps(utt)
        actions.append(Submit(new))
        return actions

    def on_speech_end(self, end: float, now: float) -> list[Action]:
        utt = self.utt
        if utt is None:
            return []
        self.utt = None
        utt.closed_at = end
        self._last_speech_end = end
        self._closing[utt.number] = utt
        actions: list[Action] = self._drop_steps(utt)
        spec, utt.speculative = utt.speculative, None
        if spec is not None and abs(spec.end - end) < 1e-6:
            utt.final_request = spec.id
            if utt.early is not None:  # the speculative final is already decoded
                hyp, utt.early = utt.early, None
                del self._closing[utt.number]
                return actions + self._on_final(utt, spec, hyp, now)
            if spec.id in self._inflight:
                return actions
        if spec is not None:
            actions += self._obsolete(spec.id, "superseded")
        final = self._final_spec(utt, end)
        utt.final_request = final.id
        actions.append(Submit(final))
        return actions

    def on_tick(self, now: float, last_decode_seconds: float = 0.0) -> list[Action]:
        """Audio advanced to `now`: ask for a step decode when one is due."""
        utt = self.utt
        if utt is None or utt.speculative is not None:
            return []
        if self._closing or any(s.kind == "step" for s in self._inflight.values()):
            return []  # one decode at a time; the closing utterance's final goes first
        first = max(self.boundary, utt.speech_start)
        if now - first < MIN_STEP_AUDIO:
            return []
        since = now - self._last_step
        factor = level_of(self.level).step_factor
        interval = max(self.o.step * (factor or 1.0), last_decode_seconds)
        if factor is None or since < interval:
            # A step that would have run at full load and does not: the partials thin out
            # (counted once per skipped step).
            if self.level and since >= max(self.o.step, last_decode_seconds) * (self._skipped + 1):
                self._skipped += 1
                return [Skipped("degraded")]
            return []
        self._last_step = now
        self._skipped = 0
        start = self._window_start(first)
        spec = DecodeSpec(
            id=next(self._ids),
            kind="step",
            utterance=utt.number,
            start=start,
            end=now,
            language=utt.language,
            languages=self.o.languages,
            prompt=self._prompt(start),
            beam_size=self.o.step_beam_size,
            context=self.o.step_context,
            fallback=False,
            task=self.o.task,
            hotwords=self.o.hotwords,
        )
        self._inflight[spec.id] = spec
        return [Submit(spec)]

    def on_result(self, request_id: int, hyp: Hypothesis, now: float) -> list[Action]:
        spec = self._inflight.pop(request_id, None)
        if spec is None:
            return [Discarded(request_id, "obsolete")]
        if spec.kind == "step":
            utt = self.utt
            if utt is None or utt.number != spec.utterance or utt.speculative is not None:
                return [Discarded(request_id, "obsolete")]
            return self._on_step(utt, spec, hyp, now)
        utt = self._closing.get(spec.utterance)
        if utt is not None and utt.final_request == request_id:
            del self._closing[spec.utterance]
            return self._on_final(utt, spec, hyp, now)
        open_utt = self.utt
        if (
            open_utt is not None
            and open_utt.speculative is not None
            and open_utt.speculative.id == request_id
        ):
            open_utt.early = hyp  # decoded before the VAD was sure: on_speech_end takes it
            return []
        return [Discarded(request_id, "obsolete")]

    def on_failure(self, request_id: int, now: float, error: str = "") -> list[Action]:
        """A decode raised. A step is followed by the next one; a final closes its utterance with
        what was settled; a speculative final is asked for again when the speech ends."""
        spec = self._inflight.pop(request_id, None)
        if spec is None:
            return [Discarded(request_id, "obsolete")]
        actions: list[Action] = [Failed(request_id, spec.kind, error)]
        if spec.kind == "step":
            return actions
        utt = self._closing.get(spec.utterance)
        if utt is not None and utt.final_request == request_id:
            del self._closing[spec.utterance]
            if utt.shown:  # the unsettled tail was never confirmed: take it off the screen
                actions += self._partial(utt, [], utt.closed_at or spec.end, utt.language, now, force=True)
            return actions
        open_utt = self.utt
        if (
            open_utt is not None
            and open_utt.speculative is not None
            and open_utt.speculative.id == request_id
        ):
            open_utt.speculative, open_utt.early = None, None
        return actions

    # -- decisions ---------------------------------------------------------------------------

    def _window_start(self, first_unsettled: float) -> float:
        return max(first_unsettled - self.o.left_context, 0.0)

    def _prompt(self, window_start: float) -> str | None:
        parts = []
        if self.o.initial_prompt:
            parts.append(self.o.initial_prompt)
        if self.o.context_finals > 0:
            # Utterances are numbered 1, 2, ...: keep those of the last `context_finals` ones.
            oldest = self._utt_count - self.o.context_finals + 1
            before = [
                w.text for n, w in self._settled if n >= oldest and w.end <= window_start + BOUNDARY_TOLERANCE
            ]
            context = join_words(before)[-PROMPT_CHARS:]
            if context:
                parts.append(context)
        return " ".join(parts) or None

    def _final_spec(self, utt: _Utterance, end: float) -> DecodeSpec:
        start = self._window_start(max(self.boundary, utt.speech_start))
        cheap = not level_of(self.level).full_finals
        spec = DecodeSpec(
            id=next(self._ids),
            kind="final",
            utterance=utt.number,
            start=min(start, end),
            end=end,
            language=utt.language,
            languages=self.o.languages,
            prompt=self._prompt(start),
            beam_size=1 if cheap else self.o.beam_size,
            context=self.o.step_context if cheap else self.o.final_context,
            fallback=not cheap,
            task=self.o.task,
            hotwords=self.o.hotwords,
        )
        self._inflight[spec.id] = spec
        return spec

    def _obsolete(self, request_id: int, reason: str) -> list[Action]:
        spec = self._inflight.pop(request_id, None)
        return [Cancel(request_id, reason, spec.kind if spec else "any")]

    def _drop_steps(self, utt: _Utterance) -> list[Action]:
        actions: list[Action] = []
        for rid, spec in list(self._inflight.items()):
            if spec.kind == "step" and spec.utterance == utt.number:
                actions += self._obsolete(rid, "obsolete")
        return actions

    def _new_words(self, utt: _Utterance, hyp: Hypothesis) -> list[HypWord]:
        """The words of a decode after those that restate settled ones (see decode/align.py)."""
        words = [w for w in hyp.words if norm_word(w.text) or w.text.strip()]
        settled = [w for _n, w in self._settled]
        k = new_words_start(words, settled, self.boundary, hyp.window_start, utt.speech_start)
        return words[k:]

    def _clean(
        self, utt: _Utterance, hyp: Hypothesis, speech_end: float, guessed: bool
    ) -> tuple[Hypothesis, list[Action]]:
        segments, counts = filter_segments(
            hyp.segments,
            self.filters,
            hyp.language,
            speech=(utt.speech_start, speech_end),
            lang_probability=hyp.language_probability if guessed else None,
        )
        cleaned = Hypothesis(
            kind=hyp.kind,
            window_start=hyp.window_start,
            window_end=hyp.window_end,
            segments=tuple(segments),
            language=hyp.language,
            language_probability=hyp.language_probability,
            decode_seconds=hyp.decode_seconds,
        )
        return cleaned, [Suppressed(name, n) for name, n in counts.items() if n]

    def _invented(self, words: list[HypWord], hyp: Hypothesis) -> bool:
        mean_p = sum(w.probability for w in words) / len(words) if words else None
        no_speech = max((s.no_speech_prob for s in hyp.segments), default=0.0)
        return is_invented_phrase(
            join_words([w.text for w in words]), hyp.language, self.filters, mean_p, no_speech
        )

    def _lock_language(self, utt: _Utterance, hyp: Hypothesis, force: bool = False) -> None:
        if utt.language is not None or hyp.language is None:
            return
        sure = (
            hyp.window_end - hyp.window_start >= 3.0
            and (hyp.language_probability or 0.0) >= LOCK_LANGUAGE_PROBABILITY
        )
        if sure or force:
            utt.language, utt.language_probability = hyp.language, hyp.language_probability

    def _on_step(self, utt: _Utterance, spec: DecodeSpec, raw: Hypothesis, now: float) -> list[Action]:
        # A language the utterance locked earlier (or the configured one) is no guess.
        guessed = utt.language is None
        self._lock_language(utt, raw)
        hyp, actions = self._clean(utt, raw, raw.window_end, guessed)
        new = self._new_words(utt, hyp)
        if new and utt.words == 0 and not utt.previous and self._invented(new, hyp):
            actions.append(Suppressed("phrases", 1))
            new = []
        committed: list[HypWord] = []
        # A cold start (no speech in the left context) needs the previous decode to have heard
        # min_commit_audio of this utterance; after a short pause the context carries over.
        cold = self._last_speech_end is None or utt.speech_start - self._last_speech_end > self.o.left_context
        heard = utt.previous_end - utt.speech_start
        if self.o.agreement and utt.previous and (not cold or heard >= self.o.min_commit_audio):
            n = 0
            horizon = min(utt.previous_end, spec.end) - self.o.commit_margin
            for a, b in zip(utt.previous, new, strict=False):
                if norm_word(a.text) != norm_word(b.text) or not norm_word(b.text) or b.end > horizon:
                    break
                n += 1
            n = max(0, n - self.o.holdback)
            # Never split a written word: " ill" | "-disposed" would settle half of it.
            while 0 < n < len(new) and _continues(new[n], hyp.language):
                n -= 1
            committed = new[:n]
        # A window that grew too long: force out all but the last few words, so it stays bounded.
        if not committed and spec.end - spec.start > self.o.max_window and len(new) > 3:
            n = len(new) - 3
            while 0 < n < len(new) and _continues(new[n], hyp.language):
                n -= 1
            committed = new[:n]
        if committed:
            nxt = new[len(committed)] if len(new) > len(committed) else None
            actions += self._commit(utt, committed, hyp, nxt, spec.end, last=False, now=now)
        rest = new[len(committed) :]
        utt.previous, utt.previous_end = rest, spec.end
        actions += self._partial(utt, rest, spec.end, hyp.language, now, force=bool(committed))
        return actions

    def _on_final(self, utt: _Utterance, spec: DecodeSpec, raw: Hypothesis, now: float) -> list[Action]:
        speech_end = utt.closed_at if utt.closed_at is not None else raw.window_end
        guessed = utt.language is None
        self._lock_language(utt, raw, force=True)
        hyp, actions = self._clean(utt, raw, speech_end, guessed)
        new = self._new_words(utt, hyp)
        if new and utt.words == 0 and self._invented(new, hyp):
            actions.append(Suppressed("phrases", 1))
            new = []
        if new:
            # Judge the tail on the words as decoded, before the segment filters: an invented
            # farewell often follows invented words that take no time, which those filters drop,
            # leaving a last "Bye." that looks heard on its own.
            raw_new = self._new_words(utt, raw)
            kept_raw, dropped_raw = trim_invented_tail(raw_new, raw.language, self.filters)
            if dropped_raw:
                cut = raw_new[len(kept_raw)].start
                new = [w for w in new if w.start < cut - 1e-6]
            kept, dropped = trim_invented_tail(new, hyp.language, self.filters)
            if dropped or dropped_raw:
                actions.append(Suppressed("tail", dropped + dropped_raw))
                new = list(kept)
        if new:
            actions += self._commit(utt, new, hyp, None, speech_end, last=True, now=now)
        elif utt.shown:
            actions += self._partial(utt, [], speech_end, hyp.language, now, force=True)
        return actions

    def _commit(
        self,
        utt: _Utterance,
        words: list[HypWord],
        hyp: Hypothesis,
        nxt: HypWord | None,
        window_end: float,
        last: bool,
        now: float,
    ) -> list[Action]:
        first = max(self.boundary, utt.speech_start)
        limit = utt.closed_at if (last and utt.closed_at is not None) else window_end
        timed: list[Word] = []
        prev_end = first
        for w in words:
            # Clip word times into [previous word, window end]: never before what is settled,
            # never past the audio that was decoded.
            s = min(max(w.start, prev_end), limit)
            e = min(max(w.end, s), limit)
            timed.append(
                Word(
                    word=w.text,
                    start=round(s, 3),
                    end=round(e, 3),
                    probability=round(min(max(w.probability, 0.0), 1.0), 4),
                )
            )
            prev_end = e
        # The boundary is where the next word begins, never later: Whisper often stretches the
        # last word of a phrase over the pause after it, which would push the next window past
        # the first audio of the words it must decide.
        end = timed[-1].end
        boundary = end if nxt is None else min(end, max(nxt.start, timed[-1].start))
        self.boundary = max(self.boundary, boundary)
        self._settled.extend((utt.number, HypWord(t.word, t.start, t.end, t.probability)) for t in timed)
        self._seq += 1
        utt.rev += 1
        utt.finals += 1
        utt.words += len(timed)
        text = join_words([w.word for w in timed])
        ev = Final(
            stream=self.o.stream,
            utterance=utt.number,
            rev=utt.rev,
            seq=self._seq,
            text=text,
            stable=text,
            start=timed[0].start,
            end=timed[-1].end,
            lang=hyp.language or utt.language,
            emitted_at=round(now, 3),
            last=last,
            words=timed,
            lang_probability=utt.language_probability
            if utt.language_probability is not None
            else hyp.language_probability,
        )
        if last:
            utt.shown = ""
        return [Emit(ev)]

    def _partial(
        self, utt: _Utterance, rest: list[HypWord], end: float, lang: str | None, now: float, force: bool
    ) -> list[Action]:
        text = join_words([w.text for w in rest])
        if not self.o.partials or (text == utt.shown and not force):
            return []
        if not text and not utt.shown and not force:
            return []
        utt.shown = text
        utt.rev += 1
        ev = Partial(
            stream=self.o.stream,
            utterance=utt.number,
            rev=utt.rev,
            seq=self._seq + 1,
            text=text,
            stable="",
            start=round(rest[0].start if rest else max(self.boundary, utt.speech_start), 3),
            end=round(end, 3),
            lang=lang or utt.language,
            emitted_at=round(now, 3),
        )
        return [Emit(ev)]


def _continues(word: HypWord, lang: str | None) -> bool:
    """Whether `word` continues the previous one (Whisper wrote no space before it)."""
    if lang in NO_SPACE_LANGUAGES:
        return False
    return bool(word.text) and not word.text[0].isspace()

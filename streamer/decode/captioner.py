"""The caption policy of one stream, as a state machine free of threads, clocks and the model.

The stream loop (pipeline.Stream) feeds it what happened and carries out what it returns:

    on_speech_start(start, now)       the segmenter opened an utterance
    on_speech_end(end, now)           ... and closed it
    on_silence(pending_end, now)      silence began (pending_end) or speech resumed (None)
    on_tick(now, level)               audio advanced; `level` is the decode engine's degradation
    on_result(request_id, hyp, now)   a decode finished (in any order)
      -> list[Submit | Cancel | Emit]

How text is decided (protocol 2: several finals per utterance, the partial is the unsettled tail):

- Every `step` seconds the window from a little before the first unsettled word to "now" is decoded
  (one decode serves both the display and the commit decision). The window starts `left_context`
  seconds before that word, so the decoder hears what came before it (a sentence after a short
  pause is not decoded cold); words of the window that are already settled are recognised by
  their times and by matching the last settled words, and dropped. The settled text before the
  window is the prompt.
- LocalAgreement-2: the words that two consecutive decodes agree on, after the settled ones, are
  committed as a final at once, provided both decodes heard at least `commit_margin` seconds of
  audio after them. A committed word is never revised: later decodes only ever add after it.
- The unsettled rest is the partial (`text`); `stable` is always empty, since an agreed word is
  committed instead of being held as stable.
- End of speech closes the utterance: the window up to the speech end is decoded at final quality
  (beam search, full encoder context, temperature fallback for long enough windows) and what it
  adds after the settled words is the utterance's last final (`last=True`). That decode may start
  speculatively as soon as silence begins; if speech resumes, it is cancelled or its result
  discarded.
- At most one decode per stream is useful at a time: a new request makes an older in-flight one
  obsolete (cancelled if not started, its result discarded otherwise, both counted), so a slow
  machine gets fewer, later decodes and never a backlog.
- Degradation (engine level): 1 = steps twice as far apart, 2 = steps three times as far apart and
  finals decoded greedily with less context and no fallback; 3 = no step decodes at all (finals only).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from streamer.decode.agreement import norm_word
from streamer.decode.filters import (
    FilterOptions,
    filter_segments,
    is_invented_phrase,
    trim_invented_tail,
)
from streamer.decode.hypothesis import NO_SPACE_LANGUAGES, Hypothesis, HypWord, join_words
from streamer.events import Final, Partial, Word

# A decode needs this much audio after the first unsettled word to say anything useful.
MIN_STEP_AUDIO = 0.4
# Per-utterance language detection stops once a window of 3 s or more is this sure.
LOCK_LANGUAGE_PROBABILITY = 0.7
# Settled words passed as the prompt are cut to this many characters (Whisper's prompt is 224 tokens).
PROMPT_CHARS = 400
# How many of the last settled words are compared with the start of a new decode (duplicates).
DEDUP_WORDS = 5
# A word belongs to the settled part when its middle lies before the boundary by this much or more.
BOUNDARY_TOLERANCE = 0.05
# Degradation: step interval multiplier per engine level.
_LEVEL_STEP = {0: 1.0, 1: 2.0, 2: 3.0}


@dataclass(frozen=True)
class CaptionerOptions:
    stream: str = "main"
    step: float = 0.5
    partials: bool = True  # emit partial events (step decodes run anyway: they decide commits)
    agreement: bool = True  # commit agreed words mid-utterance; False: finals only at end of speech
    holdback: int = 0  # last agreed words kept back from a commit
    commit_margin: float = 0.2  # audio both agreeing decodes heard after a word (s)
    # Audio (context before the utterance included) a decode must have heard before it can take
    # part in a commit: decodes of the first second of an utterance agree on wrong words.
    min_commit_audio: float = 4.0
    left_context: float = 2.0  # audio before the first unsettled word in every window (s)
    max_window: float = 15.0  # longest window; past it the unsettled words are forced out
    beam_size: int = 5  # final decodes
    step_beam_size: int = 1
    step_context: float = 15.0  # encoder context of step decodes (s); finals get 30
    language: str | None = None
    languages: tuple[str, ...] | None = None
    initial_prompt: str | None = None
    context_prompt: bool = True  # settled text before the window as the prompt
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


@dataclass(frozen=True)
class Submit:
    spec: DecodeSpec


@dataclass(frozen=True)
class Cancel:
    request_id: int
    reason: str  # obsolete | superseded | resumed


@dataclass(frozen=True)
class Emit:
    event: Partial | Final


@dataclass(frozen=True)
class Discarded:
    """A result that arrived for a request made obsolete (counted by the stream)."""

    request_id: int
    reason: str


@dataclass(frozen=True)
class Suppressed:
    """Words or segments a hallucination filter dropped (counted by the stream)."""

    filter: str
    count: int


@dataclass(frozen=True)
class Skipped:
    """A step decode not made because the decoder is degraded (partials thinned; counted)."""

    reason: str


Action = Submit | Cancel | Emit | Discarded | Suppressed | Skipped


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
        # Settled words of the stream (for the prompt and to recognise them in later decodes).
        self._settled: deque[HypWord] = deque(maxlen=200)
        self.boundary = 0.0  # audio time up to which words are settled
        self._last_speech_end: float | None = None  # end of the previous utterance
        self._last_step = -1e9  # audio time of the last step request
        self._skipped = 0  # steps skipped since the last one that ran (degradation)
        self.revisions = 0  # settled words changed afterwards: must stay 0 (checked in tests)

    # -- what the stream asks ------------------------------------------------------------------

    @property
    def finals_emitted(self) -> int:
        return self._seq

    @property
    def inflight(self) -> dict[int, DecodeSpec]:
        return dict(self._inflight)

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
        new = self._final_spec(utt, pending_end, level=0)
        utt.speculative = new
        actions += self._drop_steps(utt)
        actions.append(Submit(new))
        return actions

    def on_speech_end(self, end: float, now: float, level: int = 0) -> list[Action]:
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
        final = self._final_spec(utt, end, level)
        utt.final_request = final.id
        actions.append(Submit(final))
        return actions

    def on_tick(self, now: float, level: int = 0, last_decode_seconds: float = 0.0) -> list[Action]:
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
        interval = max(self.o.step * _LEVEL_STEP.get(level, 3.0), last_decode_seconds)
        if level >= 3 or since < interval:
            # A step that would have run at full load and does not: the partials thin out
            # (counted once per skipped step).
            if level and since >= max(self.o.step, last_decode_seconds) * (self._skipped + 1):
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

    def on_failure(self, request_id: int) -> list[Action]:
        """A decode raised: forget it (the stream reports the error)."""
        self._inflight.pop(request_id, None)
        return []

    # -- decisions ---------------------------------------------------------------------------

    def _window_start(self, first_unsettled: float) -> float:
        return max(first_unsettled - self.o.left_context, 0.0)

    def _prompt(self, window_start: float) -> str | None:
        parts = []
        if self.o.initial_prompt:
            parts.append(self.o.initial_prompt)
        if self.o.context_prompt:
            before = [w.text for w in self._settled if w.end <= window_start + BOUNDARY_TOLERANCE]
            context = join_words(before)[-PROMPT_CHARS:]
            if context:
                parts.append(context)
        return " ".join(parts) or None

    def _final_spec(self, utt: _Utterance, end: float, level: int) -> DecodeSpec:
        start = self._window_start(max(self.boundary, utt.speech_start))
        cheap = level >= 2
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
            context=self.o.step_context if cheap else 30.0,
            fallback=not cheap,
        )
        self._inflight[spec.id] = spec
        return spec

    def _obsolete(self, request_id: int, reason: str) -> list[Action]:
        self._inflight.pop(request_id, None)
        return [Cancel(request_id, reason)]

    def _drop_steps(self, utt: _Utterance) -> list[Action]:
        actions: list[Action] = []
        for rid, spec in list(self._inflight.items()):
            if spec.kind == "step" and spec.utterance == utt.number:
                actions += self._obsolete(rid, "obsolete")
        return actions

    def _new_words(self, hyp: Hypothesis, first: float) -> list[HypWord]:
        """The words of a decode after the settled ones (by time, then by matching the last settled)."""
        words = [w for w in hyp.words if norm_word(w.text) or w.text.strip()]
        new = [w for w in words if (w.start + w.end) / 2 > first - BOUNDARY_TOLERANCE]
        # Whisper's times are coarse: a settled word may show up again just after the boundary.
        settled = [norm_word(w.text) for w in list(self._settled)[-DEDUP_WORDS:]]
        head = [norm_word(w.text) for w in new[:DEDUP_WORDS]]
        for k in range(min(len(settled), len(head)), 0, -1):
            if settled[-k:] == head[:k] and new[k - 1].start < first + 1.0:
                new = new[k:]
                break
        return new

    def _clean(self, utt: _Utterance, hyp: Hypothesis, speech_end: float) -> tuple[Hypothesis, list[Action]]:
        segments, counts = filter_segments(
            hyp.segments, self.filters, hyp.language, speech=(utt.speech_start, speech_end)
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
        self._lock_language(utt, raw)
        hyp, actions = self._clean(utt, raw, raw.window_end)
        first = max(self.boundary, utt.speech_start)
        new = self._new_words(hyp, first)
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
        self._lock_language(utt, raw, force=True)
        hyp, actions = self._clean(utt, raw, speech_end)
        first = max(self.boundary, utt.speech_start)
        new = self._new_words(hyp, first)
        if new and utt.words == 0 and self._invented(new, hyp):
            actions.append(Suppressed("phrases", 1))
            new = []
        if new:
            # Judge the tail on the words as decoded, before the segment filters: an invented
            # farewell often follows invented words that take no time, which those filters drop,
            # leaving a last "Bye." that looks heard on its own.
            raw_new = self._new_words(raw, first)
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
        self._settled.extend(HypWord(t.word, t.start, t.end, t.probability) for t in timed)
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

"""Runs every configuration over the audio and collects the figures the report shows.

Why two replay modes. Latency must be measured with the file replayed at real time (1x), so the
audio clock and decoding compete as they would live; that costs wall time equal to the audio, per
configuration. So latency (and CPU per audio second, decode RTF) is measured on a subset of the
English files (`latency` set), and accuracy (WER/CER) and hallucinations are measured over the full
sets in fast mode (the stream waits for the decoder, so nothing is dropped and the text is what a
live stream on a fast enough machine would produce).

The offline baseline (plain `WhisperModel.transcribe`, same model, same file) runs in the same
process and the same run, once per model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer import metrics as prom
from streamer.config import Settings, load_settings
from streamer.decode.engine import DecodeEngine
from streamer.pipeline import run_file
from streamer_bench import concat
from streamer_bench import metrics as m
from streamer_bench.capacity import capacity, daemon_command, run_daemons, settings_env
from streamer_bench.dataset import AudioItem, take_seconds
from streamer_bench.offline import OfflineModel, OfflineResult, cached_transcribe, load_audio
from streamer_bench.overload import CpuBurner, GaugeSampler
from streamer_bench.reference import interpolated_share, match_share, reference_words, timing_disagreement
from streamer_bench.textnorm import error_rate, uses_cer

# A file whose offline baseline makes more errors than the reference has words is taken to have a
# reference that does not belong to its audio; it is listed but left out of the corpus figures.
SUSPECT_REFERENCE_RATE = 1.0
# Likewise for latency: a file where fewer than half the reference words match the timing pass.
MIN_MATCH_SHARE = 0.5

KEY_ALIASES = {
    "step": "decoder.step",
    "end_silence": "vad.end_silence",
    "beam": "decoder.beam_size",
    "beam_size": "decoder.beam_size",
    "partial_beam": "decoder.partial_beam_size",
    "agreement": "decoder.agreement",
    "partials": "decoder.partials",
    "max_window": "decoder.max_window",
    "context": "decoder.context_finals",
    "threshold": "vad.threshold",
}


@dataclass(frozen=True)
class BenchConfig:
    name: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("on", "true", "yes"):
        return True
    if low in ("off", "false", "no"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_config(spec: str) -> BenchConfig:
    """`[NAME=]MODEL[,key=value...]`, e.g. `tiny.en,step=0.3,agreement=off` or `fast=tiny.en,beam=1`.

    Keys are the aliases in KEY_ALIASES or any dotted settings key (`vad.pad=0.1`).
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"empty configuration '{spec}'")
    head = parts[0]
    name, _, model = head.rpartition("=")
    if not model:
        raise ValueError(f"configuration '{spec}' names no model")
    overrides: dict[str, Any] = {}
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        if not sep or not key:
            raise ValueError(f"configuration '{spec}': '{part}' is not key=value")
        dotted = KEY_ALIASES.get(key, key)
        if "." not in dotted:
            raise ValueError(
                f"configuration '{spec}': unknown key '{key}' (use {', '.join(KEY_ALIASES)} or a dotted key)"
            )
        overrides[dotted] = _value(val)
    if not name:
        name = ",".join([model, *parts[1:]])
    return BenchConfig(name, model, overrides)


# Extra measurements selectable like sets (`--sets ko-long,overload`).
KO_LONG = "ko-long"
OVERLOAD = "overload"
MODES = (KO_LONG, OVERLOAD)

# Pause between the files of a concatenation: like the pauses between a speaker's sentences.
CONCAT_PAUSE = 0.5


def parse_overrides(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """`KEY=VALUE` pairs (dotted settings keys or aliases) as settings overrides."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{what} '{pair}': expected KEY=VALUE")
        dotted = KEY_ALIASES.get(key, key)
        if "." not in dotted:
            raise ValueError(
                f"{what} '{pair}': unknown key '{key}' (use {', '.join(KEY_ALIASES)} or a dotted key)"
            )
        out[dotted] = _value(val.strip())
    return out


@dataclass
class Plan:
    """Which files each measurement uses.

    Latency sets are replayed at 1x: `latency` (English) for every configuration (in the core check
    only for English-only models), `ko_latency`, `long_latency` and the concatenations only for
    multilingual models.
    """

    latency: list[AudioItem]
    accuracy: dict[str, list[AudioItem]]
    nonspeech: list[AudioItem]
    capacity_file: AudioItem | None
    capacity_levels: list[int]
    ko_latency: list[AudioItem] = field(default_factory=list)
    long_latency: list[AudioItem] = field(default_factory=list)
    # Sources and length of the Korean concatenation for the lag check and the overload benchmark
    # (0 s: not run).
    concat_items: list[AudioItem] = field(default_factory=list)
    ko_long_seconds: float = 0.0
    overload_seconds: float = 0.0
    core: bool = False
    daemon_probe: bool = True


def make_plan(
    sets: dict[str, list[AudioItem]],
    quick: bool,
    capacity_levels: Sequence[int],
    latency_seconds: float | None = None,
    *,
    core: bool = False,
    selected: Collection[str] | None = None,
    ko_seconds: float | None = None,
    ko_long_seconds: float = 600.0,
    overload_seconds: float = 300.0,
) -> Plan:
    """`selected`: the sets and modes asked for (None: all)."""
    # The concatenations come from ko/ even when the ko set itself is not selected.
    all_ko = sets.get("ko", [])
    want = (lambda name: True) if selected is None else (lambda name: name in selected)
    sets = {k: (v if want(k) else []) for k, v in sets.items()}
    en = sets.get("en", [])
    long = sets.get("long", [])
    ko = sets.get("ko", [])
    ko_lat: list[AudioItem] = []
    long_lat: list[AudioItem] = []
    if core:
        # The core engineer's loop (< ~8 min): tiny.en live on ~6 English files + the 26 s long
        # clip, base live on ~8 Korean files, accuracy in fast mode on English and Korean subsets.
        short_long = sorted(long, key=lambda i: i.seconds)[:1]
        lat = short_long + take_seconds(en, latency_seconds or 40.0)
        ko_lat = ko[:8]
        accuracy = {"en": take_seconds(en, 60.0), "ko": take_seconds(ko, 60.0)}
        nonspeech: list[AudioItem] = []
    elif quick:
        # About two minutes of audio in all: ~45 s of English speech (latency at 1x and WER),
        # a few Korean files (CER) and ~40 s of non-speech.
        lat = take_seconds(en, latency_seconds or 45.0)
        accuracy = {"en": lat, "ko": take_seconds(ko, 15.0)}
        nonspeech = take_seconds(sorted(sets.get("nonspeech", []), key=lambda i: i.seconds), 40.0)
    else:
        # Latency: the 26 s long clip (consecutive sentences, several utterances) plus ~60 s of en/;
        # Korean live (~2 min); the long clips live for the lag over time.
        short_long = sorted(long, key=lambda i: i.seconds)[:1]
        lat = short_long + take_seconds(en, latency_seconds or 60.0)
        ko_lat = take_seconds(ko, ko_seconds or 120.0)
        long_lat = sorted(long, key=lambda i: i.seconds)
        accuracy = {k: sets.get(k, []) for k in ("en", "long", "ko", "multi")}
        nonspeech = sets.get("nonspeech", [])
    accuracy = {k: v for k, v in accuracy.items() if v}
    cap_candidates = sorted(long, key=lambda i: i.seconds)[:1] or lat[:1]
    return Plan(
        lat,
        accuracy,
        nonspeech,
        cap_candidates[0] if cap_candidates else None,
        sorted(set(capacity_levels)),
        ko_latency=ko_lat,
        long_latency=long_lat,
        concat_items=all_ko,
        # Part of a full run, or of any run that names them; never implied by --quick or --core.
        ko_long_seconds=ko_long_seconds if want(KO_LONG) and (selected or not (quick or core)) else 0.0,
        overload_seconds=overload_seconds if want(OVERLOAD) and (selected or not (quick or core)) else 0.0,
        core=core,
        daemon_probe=not core,
    )


def english_only(model: str) -> bool:
    return model.endswith(".en")


def _hist(metric: Any) -> dict[str, dict[str, Any]]:
    """Snapshot of a labelled prometheus Histogram by its `kind` label: count, sum, buckets."""
    out: dict[str, dict[str, Any]] = {}
    for fam in metric.collect():
        for s in fam.samples:
            kind = s.labels.get("kind", "")
            d = out.setdefault(kind, {"count": 0.0, "sum": 0.0, "buckets": {}})
            if s.name.endswith("_count"):
                d["count"] = s.value
            elif s.name.endswith("_sum"):
                d["sum"] = s.value
            elif s.name.endswith("_bucket"):
                d["buckets"][s.labels["le"]] = s.value
    return out


def hist_delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and bucket-bound median/p90 of the observations made between two snapshots."""
    out: dict[str, Any] = {}
    for kind, a in after.items():
        b = before.get(kind, {"count": 0.0, "sum": 0.0, "buckets": {}})
        count = a["count"] - b["count"]
        if count <= 0:
            continue
        buckets = sorted(((float(le), v - b["buckets"].get(le, 0.0)) for le, v in a["buckets"].items()))

        def bound(
            q: float, buckets: list[tuple[float, float]] = buckets, count: float = count
        ) -> float | None:
            for le, cum in buckets:
                if cum >= q * count:
                    return None if le == float("inf") else le
            return None

        out[kind] = {
            "count": int(count),
            "mean": (a["sum"] - b["sum"]) / count,
            "median_le": bound(0.5),
            "p90_le": bound(0.9),
        }
    return out


def _drop_counter() -> float:
    total = 0.0
    for fam in prom.AUDIO_DROPPED.collect():
        for s in fam.samples:
            if s.name.endswith("_total"):
                total += s.value
    return total


def latency_figures(
    lat: m.LatencyResult, sett: Sequence[m.Settling], sett_n: Sequence[m.Settling]
) -> dict[str, Any]:
    """The per-word latency summaries and settling counts of one file or of a whole set."""
    tail = m.Flicker(sum(s.tail.revised for s in sett), sum(s.tail.shown for s in sett))
    tail_n = m.Flicker(sum(s.tail.revised for s in sett_n), sum(s.tail.shown for s in sett_n))
    disp = m.Flicker(sum(s.display.revised for s in sett), sum(s.display.shown for s in sett))
    disp_n = m.Flicker(sum(s.display.revised for s in sett_n), sum(s.display.shown for s in sett_n))
    return {
        "first": m.summarize(lat.first_latencies),
        "final": m.summarize(lat.final_latencies),
        "end_of_speech": m.summarize(lat.end_of_speech),
        # Settled words (finals, stable prefixes) later changed: must be 0. As displayed, and on
        # normalised words (a punctuation or case change of a settled word counts only in the first).
        "revisions": sum(s.revisions for s in sett),
        "revisions_normalized": sum(s.revisions for s in sett_n),
        "tail_flicker": tail.rate,
        "tail_flicker_normalized": tail_n.rate,
        "flicker": disp.rate,
        "flicker_normalized": disp_n.rate,
        "tail_insertions": lat.tail_insertions,
        "words": len(lat.words),
        "missed_final": lat.missed_final,
    }


# Degradation the decode scheduler reports (issue 7); absent from older pipelines, read if present.
DEGRADATION_METRICS = (
    "streamer_degraded_level",
    "streamer_decodes_cancelled_total",
    "streamer_decodes_discarded_total",
    "streamer_partials_skipped_total",
    "streamer_decode_cut_total",
)


def degradation_snapshot() -> dict[str, float]:
    """Current value of each degradation metric in the default registry, summed over labels.

    Counters are reported by prometheus_client as NAME_total samples (the metric may be declared
    with or without the suffix); a gauge is its value. Missing metrics are simply absent.
    """
    out: dict[str, float] = {}
    for fam in prom.REGISTRY.collect():
        for s in fam.samples:
            if s.name in DEGRADATION_METRICS:
                key = s.name
            elif s.name + "_total" in DEGRADATION_METRICS and fam.type != "counter":
                key = s.name + "_total"
            else:
                continue
            out[key] = out.get(key, 0.0) + s.value
    return out


def degradation_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters: what was added in between; the gauge: its value at the end (and 'peak' is not
    observable from two snapshots, so the runner samples it while replaying when it matters)."""
    out: dict[str, float] = {}
    for k, v in after.items():
        out[k] = v if k == "streamer_degraded_level" else v - before.get(k, 0.0)
    return out


def lag_of(res: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Delay of last finals at the start and at the end of one long input (first vs last 2 min, or
    thirds of a shorter input)."""
    points = [m.SpeechEndDelay(0, t, d) for t, d in res.get("end_of_speech_points", [])]
    return m.lag_trend(points, seconds, span=min(120.0, seconds / 3))


def time_per_level(statuses: Sequence[dict[str, Any]], seconds: float) -> dict[int, float]:
    """Audio seconds at each degradation level of one run, from its status events (level changes
    are status events whose `degraded` says the new level; a run starts at level 0)."""
    out: dict[int, float] = {}
    level, since = 0, 0.0
    for st in statuses:
        if st["state"] != "running" or st.get("degraded") is None:
            continue
        at = min(max(float(st["at"]), since), seconds)
        out[level] = out.get(level, 0.0) + at - since
        level, since = int(st["degraded"]), at
    out[level] = out.get(level, 0.0) + max(seconds - since, 0.0)
    return {k: v for k, v in out.items() if v > 0}


def degraded_level() -> float | None:
    """The scheduler's degradation level gauge, if this pipeline has one."""
    return degradation_snapshot().get("streamer_degraded_level")


@dataclass
class Runner:
    plan: Plan
    configs: list[BenchConfig]
    out_dir: Path
    reference_model: str
    config_file: str | None = None
    do_capacity: bool = True
    capacity_model: str = "tiny.en"
    tick: Callable[[float, str], None] = lambda seconds, what: None
    results: dict[str, Any] = field(default_factory=dict)
    _offline: dict[str, OfflineModel] = field(default_factory=dict)

    # -- settings ---------------------------------------------------------------------------

    def settings(self, cfg: BenchConfig, lang: str | None, filters: bool = True) -> Settings:
        overrides: dict[str, Any] = {"model.name": cfg.model, "decoder.language": lang, **cfg.overrides}
        if not filters:
            for key in (
                "no_speech",
                "compression",
                "repetition",
                "phrases",
                "outside_speech",
                "low_confidence",
            ):
                overrides[f"filters.{key}"] = False
        return load_settings(self.config_file, overrides)

    def offline_model(self, name: str) -> OfflineModel:
        if name not in self._offline:
            self._offline[name] = OfflineModel(name, load_settings(self.config_file, {"model.name": name}))
        return self._offline[name]

    def models(self) -> list[str]:
        return list(dict.fromkeys(c.model for c in self.configs))

    def items_for(self, model: str) -> dict[str, list[AudioItem]]:
        """Accuracy sets of a model: English-only models do English; in the core check
        multilingual models do Korean (the English side is tiny.en's)."""
        if english_only(model):
            return {k: v for k, v in self.plan.accuracy.items() if k in ("en", "long")}
        if self.plan.core and self._english_model():
            return {k: v for k, v in self.plan.accuracy.items() if k not in ("en", "long")}
        return self.plan.accuracy

    def _english_model(self) -> bool:
        return any(english_only(c.model) for c in self.configs)

    def latency_sets(self, model: str) -> dict[str, list[AudioItem]]:
        """Files replayed at 1x per latency section for a configuration of `model`."""
        out: dict[str, list[AudioItem]] = {}
        english_here = not self.plan.core or english_only(model) or not self._english_model()
        if english_here and self.plan.latency:
            out["latency"] = self.plan.latency
        if not english_only(model):
            if self.plan.ko_latency:
                out["latency_ko"] = self.plan.ko_latency
            if self.plan.long_latency:
                out["latency_long"] = self.plan.long_latency
        return out

    def concat_seconds(self, model: str) -> float:
        if english_only(model) or not self.plan.concat_items:
            return 0.0
        return self.plan.ko_long_seconds + self.plan.overload_seconds

    # -- measurement plan size (for the progress bar) ----------------------------------------

    def total_seconds(self) -> float:
        ns = sum(i.seconds for i in self.plan.nonspeech)
        total = 0.0
        for cfg in self.configs:
            lat = sum(i.seconds for items in self.latency_sets(cfg.model).values() for i in items)
            acc = sum(i.seconds for items in self.items_for(cfg.model).values() for i in items)
            total += lat + acc + ns + self.concat_seconds(cfg.model)
        for model in self.models():
            acc = sum(i.seconds for items in self.items_for(model).values() for i in items)
            total += acc + ns + ns  # offline baseline + filters off
            if self.plan.daemon_probe and self.plan.latency:
                total += self.plan.latency[0].seconds
        if self.do_capacity and self.plan.capacity_file is not None:
            total += self.plan.capacity_file.seconds * len(self.plan.capacity_levels)
        return total

    # -- phases -----------------------------------------------------------------------------

    def _needs_concat(self) -> bool:
        return any(self.concat_seconds(c.model) > 0 for c in self.configs)

    def reference(self) -> dict[str, list[m.RefWord]]:
        """Word timing reference for the latency, concatenation and capacity files."""
        model = self.offline_model(self.reference_model)
        cache = self.out_dir / "cache" / "reference"
        lists = [self.plan.latency, self.plan.ko_latency, self.plan.long_latency]
        if self._needs_concat():
            lists.append(self.plan.concat_items)
        items = list(dict.fromkeys(i for lst in lists for i in lst))
        if self.plan.capacity_file is not None and self.plan.capacity_file not in items:
            items.append(self.plan.capacity_file)
        refs = {}
        for item in items:
            refs[item.name] = reference_words(item, model, cache)
            self.tick(0, f"reference timing {item.name}")
        # A reference the offline pass mostly disagrees with belongs to other audio: timing its words
        # would be noise, so such files are left out of latency (and listed).
        mismatched = [i.name for i in items if (match_share(refs[i.name]) or 0.0) < MIN_MATCH_SHARE]
        self.plan.latency = [i for i in self.plan.latency if i.name not in mismatched]
        self.plan.ko_latency = [i for i in self.plan.ko_latency if i.name not in mismatched]
        self.plan.long_latency = [i for i in self.plan.long_latency if i.name not in mismatched]
        self.plan.concat_items = [i for i in self.plan.concat_items if i.name not in mismatched]
        if self.plan.capacity_file is not None and self.plan.capacity_file.name in mismatched:
            self.plan.capacity_file = self.plan.latency[0] if self.plan.latency else None
        shares = [s for s in (interpolated_share(r) for r in refs.values()) if s is not None]
        info: dict[str, Any] = {
            "model": self.reference_model,
            "files": [i.name for i in items],
            "words": sum(len(r) for r in refs.values()),
            "interpolated_share": sum(shares) / len(shares) if shares else None,
            "excluded_mismatched": mismatched,
        }
        # The method's spread: the same references timed by a second, smaller model under test
        # (on the English latency files; skipped in the core check, which is about speed).
        others = [mm for mm in self.models() if mm != self.reference_model]
        if others and not self.plan.core:
            other = self.offline_model(others[0])
            diffs: list[float] = []
            for item in self.plan.latency:
                alt = reference_words(item, other, cache)
                diffs.extend(timing_disagreement(refs[item.name], alt))
            info["disagreement_model"] = others[0]
            info["end_time_disagreement"] = m.summarize(diffs)
        self.results["reference"] = info
        return refs

    def concatenation(
        self, seconds: float, refs: dict[str, list[m.RefWord]]
    ) -> tuple[AudioItem, list[m.RefWord]]:
        conc = concat.build(
            self.plan.concat_items, seconds, CONCAT_PAUSE, self.out_dir / "cache" / "concat", KO_LONG
        )
        assert conc is not None
        return conc.item, concat.reference(conc, refs)

    def lag(
        self, cfg: BenchConfig, engine: Any, item: AudioItem, ref: list[m.RefWord], label: str
    ) -> dict[str, Any]:
        """One long input at 1x: the usual figures plus the delay of last finals over time."""
        res = self.latency_set(cfg, engine, [(item, ref)], label=label, keep_points=True)
        res["lag"] = {item.name: lag_of(res["files"][item.name], item.seconds)}
        return res

    def overload(self, cfg: BenchConfig, refs: dict[str, list[m.RefWord]]) -> dict[str, Any]:
        """The concatenation at 1x with one decode thread while another process burns a core."""
        item, ref = self.concatenation(self.plan.overload_seconds, refs)
        starved = BenchConfig(f"{cfg.name} (overload)", cfg.model, {**cfg.overrides, "model.cpu_threads": 1})
        engine = DecodeEngine.from_settings(self.settings(starved, item.lang))
        try:
            with CpuBurner(1), GaugeSampler(degraded_level) as gauge:
                res = self.lag(starved, engine, item, ref, "overload")
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        res["degraded_level"] = gauge.summary()
        res["conditions"] = {"model.cpu_threads": 1, "cores_burned": 1, "input_seconds": item.seconds}
        return res

    def latency(self, cfg: BenchConfig, engine: Any, refs: dict[str, list[m.RefWord]]) -> dict[str, Any]:
        return self.latency_set(cfg, engine, [(item, refs[item.name]) for item in self.plan.latency])

    def latency_set(
        self,
        cfg: BenchConfig,
        engine: Any,
        items: Sequence[tuple[AudioItem, list[m.RefWord]]],
        label: str = "latency",
        keep_points: bool = False,
    ) -> dict[str, Any]:
        """Replay each file at 1x through the daemon's file source and measure what a viewer sees."""
        files: dict[str, Any] = {}
        lats: list[m.LatencyResult] = []
        sett: list[m.Settling] = []
        sett_n: list[m.Settling] = []
        audio = cpu = wall = 0.0
        rtf0, dec0, drop0 = _hist(prom.DECODE_RTF), _hist(prom.DECODE_SECONDS), _drop_counter()
        deg0 = degradation_snapshot()
        statuses: list[dict[str, Any]] = []

        def on_event(ev: Any) -> None:
            # Status changes (degraded, audio dropped, ...) as the daemon reports them.
            if ev.type == "status":
                statuses.append(
                    {"state": ev.state, "detail": ev.detail, "at": ev.emitted_at, "degraded": ev.degraded}
                )

        level_seconds: dict[int, float] = {}
        for item, ref in items:
            first_status = len(statuses)
            settings = self.settings(cfg, item.lang)
            w0, c0 = time.perf_counter(), time.process_time()
            events = run_file(settings, item.path, engine, realtime=True, emit=on_event)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            audio += item.seconds
            for level, seconds in time_per_level(statuses[first_status:], item.seconds).items():
                level_seconds[level] = level_seconds.get(level, 0.0) + seconds
            lat = m.word_latencies(ref, events, item.lang)
            se = m.settling(events)
            se_n = m.settling(events, normalized=item.lang)
            files[item.name] = {
                "seconds": item.seconds,
                **latency_figures(lat, [se], [se_n]),
                "partials": sum(1 for e in events if e.type == "partial"),
                "finals": sum(1 for e in events if e.type == "final"),
                "utterances": len({e.utterance for e in events}),
            }
            if keep_points:
                files[item.name]["end_of_speech_points"] = [
                    [p.speech_end, p.delay] for p in lat.end_of_speech_points
                ]
            lats.append(lat)
            sett.append(se)
            sett_n.append(se_n)
            self.tick(item.seconds, f"{cfg.name}: {label} {item.name}")
        overall = m.LatencyResult(
            [w for r in lats for w in r.words],
            [p for r in lats for p in r.end_of_speech_points],
            sum(r.tail_insertions for r in lats),
        )
        out: dict[str, Any] = {
            "files": files,
            "overall": latency_figures(overall, sett, sett_n),
            "samples": {
                "first": overall.first_latencies,
                "final": overall.final_latencies,
                "end_of_speech": overall.end_of_speech,
            },
            "cost": {
                "audio_seconds": audio,
                "wall_seconds": wall,
                "cpu_seconds": cpu,
                "cpu_per_audio_second": cpu / audio if audio else None,
                "decode_rtf": hist_delta(rtf0, _hist(prom.DECODE_RTF)),
                "decode_seconds": hist_delta(dec0, _hist(prom.DECODE_SECONDS)),
                "dropped_seconds": _drop_counter() - drop0,
                "degradation": degradation_delta(deg0, degradation_snapshot()),
                # Audio seconds spent at each degradation level (from the daemon's status events).
                "seconds_per_level": {str(k): round(v, 2) for k, v in sorted(level_seconds.items())},
            },
            "statuses": [st for st in statuses if st["state"] not in ("starting", "running", "stopped")][
                :200
            ],
        }
        return out

    def offline_accuracy(self, model: str) -> dict[str, OfflineResult]:
        """The offline baseline per file, cached under the output directory: it does not change
        while the pipeline is being tuned, and repeated core checks should not pay for it again."""
        om = self.offline_model(model)
        out = {}
        for items in self.items_for(model).values():
            for item in items:
                out[item.name] = cached_transcribe(om, item, self.out_dir / "cache" / "offline")
                self.tick(item.seconds, f"offline {model}: {item.name}")
        return out

    def accuracy(self, cfg: BenchConfig, engine: Any, offline: dict[str, OfflineResult]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for set_name, items in self.items_for(cfg.model).items():
            for item in items:
                assert item.reference is not None
                events = run_file(self.settings(cfg, item.lang), item.path, engine, realtime=False)
                text = " ".join(e.text for e in events if e.type == "final")
                base = offline[item.name].text
                stream_rate = error_rate(item.reference, text, item.lang)
                offline_rate = error_rate(item.reference, base, item.lang)
                rows.append(
                    {
                        "file": item.name,
                        "set": set_name,
                        "lang": item.lang,
                        "metric": "cer" if uses_cer(item.lang) else "wer",
                        "units": m.reference_units(item.reference, item.lang),
                        "stream": stream_rate,
                        "offline": offline_rate,
                        "excluded": offline_rate > SUSPECT_REFERENCE_RATE,
                        # Words invented after the last reference word ("Thank you." at the end).
                        "stream_tail_insertions": m.tail_insertions(item.reference, text, item.lang),
                        "offline_tail_insertions": m.tail_insertions(item.reference, base, item.lang),
                        "stream_text": text,
                        "offline_text": base,
                    }
                )
                self.tick(item.seconds, f"{cfg.name}: accuracy {item.name}")
        return {"files": rows, "sets": summarize_accuracy(rows)}

    def hallucinations(self, cfg: BenchConfig, engine: Any, filters: bool) -> dict[str, Any]:
        files = {}
        for item in self.plan.nonspeech:
            lang = "en"
            events = run_file(self.settings(cfg, lang, filters=filters), item.path, engine, realtime=False)
            texts = [e.text for e in events if e.type == "final"]
            files[item.name] = {"words": m.count_words(texts, lang), "text": " ".join(texts)}
            self.tick(item.seconds, f"{cfg.name}: non-speech {item.name}")
        return {
            "files": files,
            "total_words": sum(f["words"] for f in files.values()),
            "seconds": sum(i.seconds for i in self.plan.nonspeech),
        }

    def offline_hallucinations(self, model: str) -> dict[str, Any]:
        om = self.offline_model(model)
        files = {}
        for item in self.plan.nonspeech:
            r = om.transcribe(load_audio(item.path), "en")
            files[item.name] = {"words": m.count_words([r.text], "en"), "text": r.text}
            self.tick(item.seconds, f"offline {model}: non-speech {item.name}")
        return {"files": files, "total_words": sum(f["words"] for f in files.values())}

    def daemon_probe(
        self, model: str, refs: dict[str, list[m.RefWord]], overrides: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """One real daemon at 1x on the first latency file: startup, first caption, RSS, CPU.
        A configuration's overrides reach it as STREAMER_* environment variables."""
        if not self.plan.latency:
            return None
        item = self.plan.latency[0]
        work = self.out_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        cmd = daemon_command(item.path, model, item.lang or "en", work / "transcripts")
        env = settings_env(
            {k: v for k, v in (overrides or {}).items() if k not in ("model.name", "decoder.language")}
        )
        run = run_daemons([cmd], work, timeout=item.seconds * 3 + 120, env_extra=env)[0]
        self.tick(item.seconds, f"daemon {model}")
        ref = refs.get(item.name, [])
        first_word_end = ref[0].end if ref else None
        return {
            "file": item.name,
            "returncode": run.returncode,
            "ready_s": run.first_line_s,
            "first_caption_s": run.first_caption_s,
            "first_word_end_s": first_word_end,
            "peak_rss_mb": run.peak_rss_mb,
            "cpu_seconds": run.cpu_seconds,
            "cpu_per_audio_second": run.cpu_seconds / item.seconds if item.seconds else None,
            "wall_seconds": run.wall_seconds,
            "dropped_seconds": run.dropped_seconds,
            "stderr_tail": run.stderr_tail if run.returncode else "",
        }

    # -- everything -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        refs = self.reference()
        offline: dict[str, dict[str, Any]] = {}
        configs: list[dict[str, Any]] = []
        for model in self.models():
            om = self.offline_model(model)
            acc = self.offline_accuracy(model)
            audio = sum(r.audio_seconds for r in acc.values())
            offline[model] = {
                "load_seconds": om.load_seconds,
                # From each file's own CPU time (recorded when it was decoded, cached or not).
                "cpu_per_audio_second": sum(r.cpu_seconds for r in acc.values()) / audio if audio else None,
                "results": acc,
                "hallucinations": self.offline_hallucinations(model) if self.plan.nonspeech else None,
                "daemon": self.daemon_probe(model, refs) if self.plan.daemon_probe else None,
            }
        for cfg in self.configs:
            base_settings = self.settings(cfg, "en")
            w0 = time.perf_counter()
            engine = DecodeEngine.from_settings(base_settings)
            load_wall = time.perf_counter() - w0
            try:
                entry: dict[str, Any] = {
                    "name": cfg.name,
                    "model": cfg.model,
                    "overrides": cfg.overrides,
                    "settings": {
                        "step": getattr(base_settings.decoder, "step", None),
                        "end_silence": getattr(base_settings.vad, "end_silence", None),
                        "beam_size": getattr(base_settings.decoder, "beam_size", None),
                        "cpu_threads": getattr(base_settings.model, "cpu_threads", None),
                    },
                    "load_seconds": getattr(engine, "load_seconds", load_wall),
                }
                for key, items in self.latency_sets(cfg.model).items():
                    label = {"latency": "latency", "latency_ko": "ko live", "latency_long": "long live"}[key]
                    pairs = [(i, refs[i.name]) for i in items]
                    entry[key] = self.latency_set(
                        cfg, engine, pairs, label, keep_points=key == "latency_long"
                    )
                    if key == "latency_long":
                        entry[key]["lag"] = {
                            i.name: lag_of(entry[key]["files"][i.name], i.seconds) for i in items
                        }
                if self.plan.ko_long_seconds and self.concat_seconds(cfg.model):
                    item, ref = self.concatenation(self.plan.ko_long_seconds, refs)
                    entry["latency_ko_long"] = self.lag(cfg, engine, item, ref, "ko 10-min live")
                if self.items_for(cfg.model):
                    entry["accuracy"] = self.accuracy(cfg, engine, offline[cfg.model]["results"])
                if self.plan.nonspeech:
                    entry["hallucinations"] = {"with_filters": self.hallucinations(cfg, engine, True)}
                    # Without suppression once per model (the first configuration of that model).
                    if not any(c["model"] == cfg.model for c in configs):
                        entry["hallucinations"]["without_filters"] = self.hallucinations(cfg, engine, False)
            finally:
                close = getattr(engine, "close", None)
                if close is not None:
                    close()
            if cfg.overrides and self.plan.daemon_probe:
                # Peak RSS and startup of this configuration (the model's defaults are probed once).
                entry["daemon"] = self.daemon_probe(cfg.model, refs, cfg.overrides)
            if self.plan.overload_seconds and self.concat_seconds(cfg.model):
                # Its own engine (one decode thread), after this configuration's engine is closed.
                entry["overload"] = self.overload(cfg, refs)
            configs.append(entry)
        self.results["configs"] = configs
        self.results["offline"] = {
            model: {
                "load_seconds": o["load_seconds"],
                "cpu_per_audio_second": o["cpu_per_audio_second"],
                "hallucinations": o["hallucinations"],
                "daemon": o["daemon"],
            }
            for model, o in offline.items()
        }
        if self.do_capacity and self.plan.capacity_file is not None:
            item = self.plan.capacity_file
            self.results["capacity"] = capacity(
                item.path,
                item.seconds,
                refs[item.name],
                self.plan.capacity_levels,
                self.capacity_model,
                self.out_dir / "work",
                on_level=lambda n: self.tick(item.seconds, f"capacity {n} streams"),
            )
        return self.results


def summarize_accuracy(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Corpus error rates per set and overall (per metric), streaming vs offline, and their ratio."""
    out: dict[str, Any] = {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        # A set that mixes languages (multi/) is split by metric: WER and CER do not add up.
        groups.setdefault(r["set"] if r["metric"] == "wer" else f"{r['set']} (cer)", []).append(r)
        if r["lang"] == "en":
            groups.setdefault("english", []).append(r)
    for name, rs in groups.items():
        kept = [r for r in rs if not r["excluded"]]
        stream = m.corpus_rate((r["stream"], r["units"]) for r in kept)
        off = m.corpus_rate((r["offline"], r["units"]) for r in kept)
        out[name] = {
            "metric": kept[0]["metric"] if kept else rs[0]["metric"],
            "files": len(kept),
            "excluded": [r["file"] for r in rs if r["excluded"]],
            "stream": stream,
            "offline": off,
            "ratio": m.ratio(stream, off),
            "stream_tail_insertions": sum(r.get("stream_tail_insertions", 0) for r in kept),
            "offline_tail_insertions": sum(r.get("offline_tail_insertions", 0) for r in kept),
        }
    return out

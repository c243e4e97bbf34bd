"""The benchmark's plans, the Korean concatenation and the report over partial runs, without a model."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer_bench import concat
from streamer_bench import metrics as m
from streamer_bench.dataset import AudioItem
from streamer_bench.report import curve_points, evaluate_targets, markdown, summary_rows, terminal_summary
from streamer_bench.runner import BenchConfig, Plan, Runner, make_plan, parse_overrides


def _item(set_name: str, stem: str, seconds: float, lang: str = "en", path: Path | None = None) -> AudioItem:
    return AudioItem(path or Path(f"/x/{set_name}/{stem}.flac"), set_name, lang, f"text of {stem}", seconds)


def _sets() -> dict[str, list[AudioItem]]:
    return {
        "en": [_item("en", f"e{i}", 7.0) for i in range(12)],
        "long": [_item("long", "big", 234.0), _item("long", "small", 26.0)],
        "ko": [_item("ko", f"k{i}", 4.5, "ko") for i in range(30)],
        "multi": [_item("multi", "de", 5.0, "de")],
        "nonspeech": [_item("nonspeech", "rain", 30.0, lang="")],
    }


def test_core_plan_is_small_and_splits_roles() -> None:
    plan = make_plan(_sets(), False, [1], core=True)
    assert plan.latency[0].name == "long/small"
    assert 30 <= sum(i.seconds for i in plan.latency[1:]) < 50  # ~6 English files
    assert len(plan.ko_latency) == 8
    assert set(plan.accuracy) == {"en", "ko"} and not plan.nonspeech
    assert plan.ko_long_seconds == plan.overload_seconds == 0 and not plan.daemon_probe
    runner = Runner(
        plan, [BenchConfig("tiny.en", "tiny.en"), BenchConfig("base", "base")], Path("/tmp"), "base"
    )
    assert set(runner.latency_sets("tiny.en")) == {"latency"}
    assert set(runner.latency_sets("base")) == {"latency_ko"}
    assert set(runner.items_for("tiny.en")) == {"en"} and set(runner.items_for("base")) == {"ko"}


def test_full_plan_does_everything() -> None:
    plan = make_plan(_sets(), False, [1, 2])
    assert plan.ko_latency and [i.name for i in plan.long_latency] == ["long/small", "long/big"]
    assert plan.ko_long_seconds == 600 and plan.overload_seconds == 300
    assert set(plan.accuracy) == {"en", "long", "ko", "multi"} and plan.nonspeech
    runner = Runner(
        plan, [BenchConfig("tiny.en", "tiny.en"), BenchConfig("base", "base")], Path("/tmp"), "base"
    )
    assert set(runner.latency_sets("tiny.en")) == {"latency"}
    assert set(runner.latency_sets("base")) == {"latency", "latency_ko", "latency_long"}
    assert runner.concat_seconds("tiny.en") == 0 and runner.concat_seconds("base") == 900


def test_selected_sets_and_modes_make_a_partial_plan() -> None:
    plan = make_plan(_sets(), False, [1], selected={"ko", "overload"}, overload_seconds=60)
    assert not plan.latency and plan.ko_latency and set(plan.accuracy) == {"ko"} and not plan.nonspeech
    assert plan.ko_long_seconds == 0 and plan.overload_seconds == 60
    # The concatenation's sources are ko/ even when only a mode is selected.
    only = make_plan(_sets(), False, [1], selected={"ko-long"})
    assert not only.ko_latency and len(only.concat_items) == 30 and only.ko_long_seconds == 600
    assert make_plan(_sets(), True, [1]).ko_long_seconds == 0  # --quick stays quick


def test_parse_overrides() -> None:
    assert parse_overrides(["decoder.commit=agree2", "beam=1", "vad.pad=0.1"], "--set") == {
        "decoder.commit": "agree2",
        "decoder.beam_size": 1,
        "vad.pad": 0.1,
    }
    for bad in ("nokey", "colour=red", "=1"):
        with pytest.raises(ValueError, match="--set"):
            parse_overrides([bad], "--set")


def _wav(path: Path, seconds: float, value: float) -> AudioItem:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.full(round(seconds * 16000), value) * 32767).astype(np.int16).tobytes())
    return _item("ko", path.stem, seconds, "ko", path)


def test_concatenation_cycles_files_with_pauses_and_shifts_references(tmp_path: Path) -> None:
    a, b = _wav(tmp_path / "a.wav", 1.0, 0.5), _wav(tmp_path / "b.wav", 2.0, -0.25)
    conc = concat.build([a, b], 5.0, 0.5, tmp_path / "cache", "ko-long")
    assert conc is not None
    # a (1 s) + 0.5 + b (2 s) + 0.5 + a (1 s) + 0.5 = 5.5 s >= 5 s
    assert [(i.name, o) for i, o in conc.parts] == [("ko/a", 0.0), ("ko/b", 1.5), ("ko/a", 4.0)]
    assert conc.item.seconds == pytest.approx(5.5)
    assert conc.item.lang == "ko" and conc.item.reference == "text of a text of b text of a"
    with wave.open(str(conc.item.path)) as r:
        pcm = np.frombuffer(r.readframes(r.getnframes()), dtype=np.int16) / 32767
    assert pcm[8000] == pytest.approx(0.5, abs=1e-3)  # a
    assert pcm[int(1.2 * 16000)] == 0  # the pause
    assert pcm[int(2.0 * 16000)] == pytest.approx(-0.25, abs=1e-3)  # b
    refs = {"ko/a": [m.RefWord("x", 0.1, 0.4, "match")], "ko/b": [m.RefWord("y", 1.0, 1.5, "match")]}
    shifted = concat.reference(conc, refs)
    assert [(w.text, w.start, w.end) for w in shifted] == [
        ("x", 0.1, 0.4),
        ("y", 2.5, 3.0),
        ("x", pytest.approx(4.1), pytest.approx(4.4)),
    ]
    # Cached: the second build reuses the file and its offsets.
    mtime = conc.item.path.stat().st_mtime_ns
    again = concat.build([a, b], 5.0, 0.5, tmp_path / "cache", "ko-long")
    assert again is not None and again.item.path.stat().st_mtime_ns == mtime and again.parts == conc.parts
    assert json.loads(conc.item.path.with_suffix(".json").read_text())["offsets"] == [0.0, 1.5, 4.0]


def _section(final_med: float, revisions: int = 0, lag: dict[str, Any] | None = None) -> dict[str, Any]:
    summ = {
        "n": 3,
        "mean": final_med,
        "median": final_med,
        "p90": final_med + 1,
        "p99": final_med + 2,
        "max": 9.0,
    }
    sec: dict[str, Any] = {
        "files": {},
        "overall": {
            "first": summ,
            "final": summ,
            "end_of_speech": summ,
            "revisions": revisions,
            "revisions_normalized": revisions,
            "tail_flicker": 0.2,
            "tail_flicker_normalized": 0.1,
            "flicker": 0.2,
            "flicker_normalized": 0.1,
            "tail_insertions": 0,
            "words": 3,
            "missed_final": 0,
        },
        "samples": {"first": [1.0], "final": [final_med], "end_of_speech": [0.5]},
        "cost": {
            "audio_seconds": 30.0,
            "cpu_seconds": 15.0,
            "wall_seconds": 31.0,
            "cpu_per_audio_second": 0.5,
        },
        "statuses": [],
    }
    if lag is not None:
        sec["lag"] = {"ko-long/x": lag}
    return sec


def _acc(name: str, ratio: float) -> dict[str, Any]:
    return {
        "files": [],
        "sets": {
            name: {
                "metric": "cer" if "cer" in name else "wer",
                "files": 1,
                "excluded": [],
                "stream": 0.1 * ratio,
                "offline": 0.1,
                "ratio": ratio,
            }
        },
    }


def test_report_over_a_partial_run_with_a_candidate_curve() -> None:
    lag = {
        "span_seconds": 120.0,
        "first_n": 10,
        "first_median": 1.0,
        "last_n": 9,
        "last_median": 3.5,
        "growth": 2.5,
    }
    results: dict[str, Any] = {
        "configs": [
            {
                "name": "base",
                "model": "base",
                "overrides": {},
                "latency_ko": _section(3.0),
                "latency_ko_long": _section(4.0, revisions=2, lag=lag),
                "accuracy": _acc("ko (cer)", 1.02),
            },
            {
                "name": "early",
                "model": "base",
                "overrides": {"decoder.commit": "early"},
                "latency_ko": _section(1.2),
                "accuracy": _acc("ko (cer)", 1.10),
            },
            {"name": "tiny.en", "model": "tiny.en", "overrides": {}, "accuracy": _acc("english", 1.0)},
        ]
    }
    results["targets"] = evaluate_targets(results)
    got = {(t["model"], t["target"]): t for t in results["targets"]}
    assert got[("base", "Korean median final latency")]["value"] == 3.0
    assert got[("base", "Korean CER / offline CER")]["value"] == pytest.approx(1.02)
    assert got[("base", "Korean 10 min: last-final delay growth (last 2 min - first 2 min)")]["ok"] is False
    assert got[("base", "settled words revised")]["value"] == 2
    assert got[("tiny.en", "median final latency")]["ok"] is None  # no English latency measured
    pts = curve_points(results)
    assert [(p["config"], p["final_median"], p["ratio"]) for p in pts] == [
        ("base", 3.0, 1.02),
        ("early", 1.2, 1.1),
    ]
    rows = summary_rows(results)
    assert [(r["config"], r["set"]) for r in rows] == [("base", "ko"), ("base", "ko-long"), ("early", "ko")]
    assert rows[1]["lag_growth"] == 2.5 and rows[1]["revisions"] == 2
    md = markdown(results)
    assert "## Lag over time" in md and "## Latency against accuracy" in md and "**no**" in md
    assert "accuracy only" in terminal_summary(results)


def test_core_with_multilingual_candidates_only_measures_english_too() -> None:
    plan = make_plan(_sets(), False, [1], core=True)
    configs = [BenchConfig("base", "base"), BenchConfig("x", "base", {"decoder.beam_size": 1})]
    runner = Runner(plan, configs, Path("/tmp"), "base")
    assert set(runner.latency_sets("base")) == {"latency", "latency_ko"}
    assert set(runner.items_for("base")) == {"en", "ko"}


def test_history_lines_accumulate(tmp_path: Path) -> None:
    from streamer_bench.report import append_history

    cfg = {"name": "base", "model": "base", "overrides": {}, "latency_ko": _section(2.0)}
    results: dict[str, Any] = {
        "meta": {"started": "t0", "command": "streamer bench --core"},
        "configs": [cfg],
    }
    append_history(results, tmp_path / "history.jsonl")
    append_history(results, tmp_path / "history.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["rows"][0]["final_p50"] == 2.0 and lines[0]["rows"][0]["set"] == "ko"


def test_compare_with_the_previous_run(tmp_path: Path) -> None:
    from streamer_bench.report import append_history, compare_rows, last_history, summary_rows

    assert last_history(tmp_path / "none.jsonl") is None
    cfg = {"name": "base", "model": "base", "overrides": {}, "latency_ko": _section(3.0)}
    append_history({"meta": {"started": "t0"}, "configs": [cfg]}, tmp_path / "h.jsonl")
    prev = last_history(tmp_path / "h.jsonl")
    assert prev is not None and prev["started"] == "t0"
    now = {"configs": [{**cfg, "latency_ko": _section(1.5, revisions=1)}, {**cfg, "name": "new"}]}
    (line,) = compare_rows(prev["rows"], summary_rows(now))  # "new" has no earlier row
    assert (
        line.startswith("base") and "final_p50 3.00→1.50 (-1.50)" in line and "revisions 0→1 (+1.00)" in line
    )


def test_summary_reads_plan_without_latency_sets() -> None:
    plan = Plan([], {}, [], None, [])
    runner = Runner(plan, [BenchConfig("base", "base")], Path("/tmp"), "base")
    assert runner.latency_sets("base") == {} and runner.total_seconds() == 0


def test_settings_env_reaches_the_daemon_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.config import load_settings
    from streamer_bench.capacity import settings_env

    env = settings_env({"decoder.beam_size": 2, "model.cpu_threads": 1, "filters.phrases": False})
    assert env == {
        "STREAMER_DECODER__BEAM_SIZE": "2",
        "STREAMER_MODEL__CPU_THREADS": "1",
        "STREAMER_FILTERS__PHRASES": "false",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings(None, {})
    assert (s.decoder.beam_size, s.model.cpu_threads, s.filters.phrases) == (2, 1, False)

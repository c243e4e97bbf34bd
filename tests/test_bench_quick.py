"""A `streamer bench --quick`-style run on one short speech file and one short non-speech file.

It checks that the report is produced and that its figures are finite and consistent with each
other, not how good they are (that is what docs/benchmarks.md is for). Real model (tiny.en), real
pipeline, real daemon subprocess; about 30 s of CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEECH = "en/ljspeech_LJ001-0004"  # 5.1 s, one sentence
NONSPEECH = "nonspeech/esc50_4-156993-A-19_thunderstorm"  # 5.0 s


def _link_audio(src: Path, dst: Path) -> None:
    # Symlinks in tmp_path: the recorded audio is never copied anywhere.
    for stem in (SPEECH, NONSPEECH):
        folder = dst / stem.split("/")[0]
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in (".flac", ".txt", ".lang"):
            f = src / f"{stem}{suffix}"
            if f.is_file():
                (folder / f.name).symlink_to(f)


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


def _check_summary(s: dict[str, Any], what: str) -> None:
    assert s["n"] > 0, f"{what}: no values"
    assert s["median"] <= s["p90"] <= s["p99"] <= s["max"], f"{what}: percentiles out of order: {s}"


@pytest.mark.model
@pytest.mark.slow
def test_quick_bench_writes_a_consistent_report(audio_dir: Path, tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    _link_audio(audio_dir, audio)
    out = tmp_path / "out"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer",
            "bench",
            "--quick",
            "--audio",
            str(audio),
            "--out",
            str(out),
            "--models",
            "tiny.en",
            "--reference-model",
            "tiny.en",
            "--capacity",
            "1",
            "--no-fanout",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "streamer bench — summary" in proc.stdout

    for name in ("report.md", "results.json", "latency.png", "wer.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert all(math.isfinite(x) for x in _numbers(results))

    (cfg,) = results["configs"]
    assert cfg["model"] == "tiny.en"
    lat = cfg["latency"]
    overall = lat["overall"]
    _check_summary(overall["first"], "first appearance")
    _check_summary(overall["final"], "final")
    assert overall["words"] == sum(f["words"] for f in lat["files"].values()) > 0
    assert 0 <= overall["missed_final"] <= overall["words"]
    assert overall["final"]["n"] == overall["words"] - overall["missed_final"]
    assert overall["first"]["n"] >= overall["final"]["n"]  # a word in a final has appeared
    assert overall["flicker"] is not None and 0 <= overall["flicker"] <= 1
    assert overall["revisions"] >= 0 and overall["revisions_normalized"] >= 0
    assert overall["tail_flicker"] is None or 0 <= overall["tail_flicker"] <= 1
    assert overall["tail_insertions"] >= 0
    # One utterance or more, each closed by a last final.
    assert overall["end_of_speech"]["n"] >= 1
    assert len(lat["samples"]["final"]) == overall["final"]["n"]
    cost = lat["cost"]
    assert cost["audio_seconds"] == pytest.approx(5.1, abs=0.1)
    # results.json rounds to 6 decimals: compare with that much slack.
    assert cost["cpu_per_audio_second"] == pytest.approx(
        cost["cpu_seconds"] / cost["audio_seconds"], abs=1e-5
    )
    assert cost["cpu_seconds"] > 0
    # Replayed at 1x: a run cannot take less wall time than the audio lasts.
    assert cost["wall_seconds"] >= cost["audio_seconds"] * 0.95

    (row,) = cfg["accuracy"]["files"]
    assert row["file"] == SPEECH and row["metric"] == "wer" and row["units"] > 0
    en = cfg["accuracy"]["sets"]["en"]
    assert en["stream"] == pytest.approx(row["stream"]) and en["offline"] == pytest.approx(row["offline"])
    if en["offline"] > 0:
        assert en["ratio"] == pytest.approx(en["stream"] / en["offline"])

    h = cfg["hallucinations"]
    for key in ("with_filters", "without_filters"):
        assert h[key]["total_words"] == sum(f["words"] for f in h[key]["files"].values()) >= 0
    assert set(h["with_filters"]["files"]) == {NONSPEECH}

    daemon = results["offline"]["tiny.en"]["daemon"]
    assert daemon["returncode"] == 0
    assert 0 < daemon["ready_s"] <= daemon["first_caption_s"] <= daemon["wall_seconds"]
    assert daemon["peak_rss_mb"] > 50

    cap = results["capacity"]
    assert [lv["streams"] for lv in cap["levels"]] == [1]
    assert cap["max_streams"] == (1 if cap["levels"][0]["ok"] else 0)

    targets = {(t["model"], t["target"]): t for t in results["targets"]}
    t = targets[("tiny.en", "median final latency")]
    assert t["value"] == pytest.approx(overall["final"]["median"])
    assert t["ok"] == (t["value"] <= t["limit"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Targets" in report and "## Latency" in report and "## Capacity" in report

"""`streamer bench` with only the Korean live modes (the concatenation and the overload benchmark)
on one short Korean file: real model (base), real pipeline at 1x, a real busy-loop process.

It checks that both modes run end to end and report consistent figures, not how good they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEECH = "ko/emotiontts_adb00002"  # 7.8 s, one sentence


@pytest.mark.model
@pytest.mark.slow
def test_korean_concatenation_and_overload_modes(audio_dir: Path, tmp_path: Path) -> None:
    audio = tmp_path / "audio" / "ko"
    audio.mkdir(parents=True)
    for suffix in (".flac", ".txt", ".lang"):
        (audio / f"{SPEECH.split('/')[1]}{suffix}").symlink_to(audio_dir / f"{SPEECH}{suffix}")
    out = tmp_path / "out"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    cmd = [sys.executable, "-m", "streamer", "bench", "--audio", str(tmp_path / "audio"), "--out", str(out)]
    cmd += ["--models", "base", "--long-ko", "5", "--overload", "5", "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (cfg,) = json.loads((out / "results.json").read_text(encoding="utf-8"))["configs"]
    # Only what was named ran: no English or Korean file set, no accuracy, no capacity.
    assert "latency" not in cfg and "latency_ko" not in cfg and "accuracy" not in cfg
    (wav,) = (out / "cache" / "concat").glob("ko-long-*.wav")
    for key in ("latency_ko_long", "overload"):
        sec = cfg[key]
        (name,) = sec["files"]
        assert name == f"ko-long/{wav.stem}"
        cost = sec["cost"]
        assert cost["audio_seconds"] == pytest.approx(8.3, abs=0.1)  # 7.8 s + the 0.5 s pause
        assert cost["wall_seconds"] >= cost["audio_seconds"] * 0.95  # replayed at 1x
        o = sec["overall"]
        assert o["words"] > 0 and o["final"]["n"] == o["words"] - o["missed_final"]
        assert o["end_of_speech"]["n"] >= 1 and o["revisions"] >= 0
        lag = sec["lag"][name]
        assert lag["first_n"] + lag["last_n"] >= 1
    over = cfg["overload"]
    assert over["conditions"] == {
        "model.cpu_threads": 1,
        "cores_burned": 1,
        "input_seconds": pytest.approx(8.3, abs=0.1),
    }
    assert set(over["degraded_level"]) == {"samples", "max", "mean", "degraded_share"}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Lag over time" in report and "## Overload" in report
    assert "ko-long" in proc.stdout and "overload" in proc.stdout

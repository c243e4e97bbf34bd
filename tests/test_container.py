"""The container image, built and run with real podman (Debian's podman with runc).

There is no container registry here, so the base image is Debian 12 minbase with Python made
locally by scripts/container-base.sh (debootstrap, cached), and the image is built from wheels
made on the host (scripts/container-wheels.sh) with `--network none`: nothing is downloaded
inside the build. The test then runs the image as a user would (read-only root, one volume,
demo source), takes a final over WebSocket, stops it with `podman stop` (SIGTERM) and reads the
finals back from the volume.

Measured and printed (`-s` shows them): the image size and the time from `podman run` to
READY=1, which podman forwards from the daemon (`--sdnotify=container`) to a socket the test
binds, as systemd would receive it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from .components import tool
from .helpers_mosquitto import free_port

pytestmark = [pytest.mark.slow, pytest.mark.component]

REPO = Path(__file__).resolve().parent.parent
BASE = "localhost/streamer-base:bookworm"
PODMAN = ["podman", "--runtime", "runc"]
MAX_IMAGE_BYTES = 700_000_000


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed ({res.returncode}): {res.stderr[-3000:]}")
    return res


def _context(dest: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) plus host-made wheels: the build context."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = Path(raw.decode())
        src = REPO / rel
        if not src.is_file():  # deleted in the work tree but still in the index
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)
    subprocess.run(
        [str(REPO / "scripts" / "container-wheels.sh"), str(dest / "wheels")],
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        capture_output=True,
        timeout=900,
    )
    return dest


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tool("podman", "podman runc conmon containernetworking-plugins iptables")
    tool("debootstrap", "debootstrap")
    tool("strip", "binutils")
    subprocess.run([str(REPO / "scripts" / "container-base.sh"), BASE], check=True, timeout=1200)
    ctx = _context(tmp_path_factory.mktemp("ctx"))
    tag = f"localhost/streamer:test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    podman(
        "build",
        "--network",
        "none",  # proves the build needs nothing from outside
        "--format",
        "docker",  # keeps HEALTHCHECK, which the OCI image format has no field for
        "--layers=false",
        "--build-arg",
        f"BASE_IMAGE={BASE}",
        "-t",
        tag,
        "-f",
        str(ctx / "Containerfile"),
        str(ctx),
        timeout=1200,
    )
    print(f"\ncontainer: image built in {time.monotonic() - started:.0f} s")
    try:
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False)


def _inspect(image: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(podman("image", "inspect", image).stdout)
    return doc[0]


def test_image_size_user_and_healthcheck(image: str) -> None:
    info = _inspect(image)
    size = int(info["Size"])
    print(f"\ncontainer: image size {size / 1e6:.0f} MB (base {int(_inspect(BASE)['Size']) / 1e6:.0f} MB)")
    assert size <= MAX_IMAGE_BYTES, f"image is {size / 1e6:.0f} MB, over {MAX_IMAGE_BYTES / 1e6:.0f} MB"
    config = info["Config"]
    assert config["User"] == "10001:10001"
    check = info.get("Healthcheck") or config.get("Healthcheck")  # podman: top level; docker: Config
    assert check and "/health" in " ".join(check["Test"]), info.keys()
    assert config["StopSignal"] in ("SIGTERM", "15")


def test_missing_volume_is_one_line_and_exit_1(image: str) -> None:
    res = podman("run", "--rm", "--read-only", image, "run", "--source", "demo", check=False, timeout=120)
    lines = [line for line in res.stderr.splitlines() if "level=" not in line]  # podman's own noise
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and lines[0].startswith("streamer: /data is not a mounted volume"), lines


class NotifySocket:
    """The socket podman forwards READY=1 to (`--sdnotify=container`), as systemd would bind it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait(self, key: str, timeout: float) -> None:
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.sock.recv(65536).decode()
            if any(line.startswith(key) for line in data.splitlines()):
                return
        raise AssertionError(f"no {key} within {timeout} s")

    def close(self) -> None:
        self.sock.close()


def test_run_caption_stop_and_find_the_finals_in_the_volume(image: str, tmp_path: Path) -> None:
    name = f"streamer-test-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-data"
    port = free_port()
    toml = tmp_path / "streamer.toml"
    # Configuration from a mounted TOML file: the stream's name and the language come from it.
    toml.write_text('stream = "hall"\n\n[decoder]\nlanguage = "en"\n')
    notify = NotifySocket(tmp_path / "notify.sock")
    podman("volume", "create", volume)
    try:
        started = time.monotonic()
        run = subprocess.Popen(
            [
                *PODMAN,
                "run",
                "-d",
                "--name",
                name,
                "--read-only",
                "--read-only-tmpfs=false",  # not even /tmp is writable, as with docker --read-only
                "--sdnotify=container",
                "-p",
                f"127.0.0.1:{port}:8765",
                "-v",
                f"{volume}:/data",
                "-v",
                f"{toml}:/etc/streamer/streamer.toml:ro",
                image,
                "run",
                "--source",
                "demo",
            ],
            env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        notify.wait("READY=1", timeout=180)
        ready = time.monotonic() - started
        print(f"\ncontainer: READY=1 {ready:.1f} s after `podman run`")
        _out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err

        res = podman("healthcheck", "run", name, check=False, timeout=60)
        assert res.returncode == 0, f"HEALTHCHECK failed: {res.stdout} {res.stderr}"

        final, open_utterance = _final_then_open_sentence(port)
        assert final["stream"] == "hall"

        stop = podman("stop", "-t", "30", name, timeout=60)
        assert stop.returncode == 0
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name, check=False).stderr[-3000:]

        mount = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
        files = sorted((mount / "transcripts").glob("hall-*.jsonl"))
        assert files, f"no transcript in the volume: {list(mount.rglob('*'))}"
        finals = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        assert any(f["seq"] == final["seq"] and f["text"] == final["text"] for f in finals)
        # SIGTERM closed the sentence being spoken with a final of its own.
        closing = [f for f in finals if f["utterance"] == open_utterance]
        assert closing and closing[-1]["last"], (open_utterance, finals[-3:])
    finally:
        notify.close()
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def _final_then_open_sentence(port: int, timeout: float = 120.0) -> tuple[dict[str, Any], int]:
    """The first final, then the utterance of a partial whose sentence has not ended yet."""
    deadline = time.monotonic() + timeout
    with connect(f"ws://127.0.0.1:{port}/ws?stream=hall", open_timeout=30) as ws:
        first: dict[str, Any] | None = None
        closed: set[int] = set()
        while time.monotonic() < deadline:
            ev = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if ev["type"] == "final":
                first = first or ev
                if ev["last"]:
                    closed.add(ev["utterance"])
            elif ev["type"] == "partial" and first is not None and ev["utterance"] not in closed:
                return first, int(ev["utterance"])
    raise AssertionError("no final followed by an open sentence over WebSocket")

"""A real, headless OBS Studio for tests (Debian obs-studio 29+, xvfb, dbus-daemon), and an RTMP receiver.

OBS runs under its own Xvfb with software OpenGL and a private HOME/XDG_CONFIG_HOME whose global.ini
enables obs-websocket on a free port with a password and skips the first-run wizard. Ready when
the WebSocket port accepts connections (its log says "Server started successfully on port N").
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .components import ffmpeg
from .helpers_mosquitto import free_port

OBS = shutil.which("obs")


def obs_missing_reason() -> str | None:
    for name in ("obs", "Xvfb", "dbus-run-session"):
        if shutil.which(name) is None:
            return f"{name} not installed: apt-get install obs-studio xvfb dbus-daemon"
    return None


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"{what} did not listen on {port} in {timeout} s: {log.read_text(errors='replace')[-3000:]}"
    )


class Obs:
    def __init__(self, workdir: Path, password: str = "obs-test-password") -> None:
        self.dir = workdir
        self.home = workdir / "home"
        self.port = free_port()
        self.password = password
        self.log = workdir / "obs.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.display = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.home / ".config" / "obs-studio"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "global.ini").write_text(
            # FirstRun=true means "the first run is done": with false OBS opens its modal
            # auto-configuration wizard, which blocks the UI thread and so StartStream.
            "[General]\nFirstRun=true\n\n"
            "[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\n"
            f"ServerPort={self.port}\nAlertsEnabled=false\nAuthRequired=true\nServerPassword={self.password}\n"
        )
        env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "LIBGL_ALWAYS_SOFTWARE": "1",
            "QT_QPA_PLATFORM": "xcb",
        }
        env.pop("DISPLAY", None)
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        # Xvfb picks a free display itself and writes its number to the pipe (-displayfd).
        read_fd, write_fd = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            self.display = ":" + f.readline().strip()
        env["DISPLAY"] = self.display
        with self.log.open("ab") as log:
            # A session of its own so that teardown ends obs and its D-Bus together. The bus comes
            # from dbus-run-session (its child, in the process group) rather than
            # `dbus-launch --exit-with-session`, whose forked bus daemon would outlive teardown.
            self.proc = subprocess.Popen(
                ["dbus-run-session", "--", "obs", "--disable-shutdown-check", "--multi"],
                env=env,
                cwd=self.dir,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_port(self.port, self.proc, self.log, 60, "obs")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of the group (the bus daemon)
        self.proc = None
        if self.xvfb is not None:
            self.xvfb.terminate()
            self.xvfb.wait(10)
            self.xvfb = None

    def screenshot(self, path: Path) -> None:
        """The virtual screen as PNG (for looking at OBS when a test fails)."""
        grab = [
            "-f",
            "x11grab",
            "-draw_mouse",
            "0",
            "-video_size",
            "1280x720",
            "-i",
            self.display,
            "-frames:v",
            "1",
        ]
        subprocess.run([ffmpeg(), "-loglevel", "error", "-y", *grab, str(path)], check=False)


class RtmpReceiver:
    """ffmpeg as a one-shot RTMP server on loopback: records what OBS streams into an FLV file."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.flv = workdir / "received.flv"
        self.log = workdir / "rtmp.log"
        self.url = f"rtmp://127.0.0.1:{self.port}/live"
        self.key = "test"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(ffmpeg(), "-hide_banner", "-nostdin", "-y", "-listen", "1"),
                    *("-i", f"{self.url}/{self.key}", "-c", "copy", "-f", "flv", str(self.flv)),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def wait(self, timeout: float = 20.0) -> None:
        """The sender hung up: ffmpeg finishes the file and exits."""
        self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _nal_units(annexb: bytes) -> list[bytes]:
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", annexb)]
    units = []
    for i, s in enumerate(starts):
        body = annexb[s + 3 : starts[i + 1] if i + 1 < len(starts) else len(annexb)]
        units.append(body.rstrip(b"\x00"))  # a 4-byte start code's leading zero belongs to no unit
    return units


NAL_SLICE, NAL_IDR, NAL_SEI, NAL_FILLER = 1, 5, 6, 12


def sei_before_slices(annexb: bytes) -> bytes:
    """Move each SEI in front of the picture it follows (past filler data).

    OBS 29 appends the caption SEI to the encoded packet, after the slice and x264's CBR filler.
    FFmpeg 5.1's H.264 decoder ignores an SEI after a slice ("Late SEI is not implemented"), so
    it would not see the captions; in front of the slice it decodes them.
    """
    out: list[bytes] = []
    for unit in _nal_units(annexb):
        if unit and unit[0] & 0x1F == NAL_SEI:
            j = len(out)
            while j and out[j - 1][0] & 0x1F == NAL_FILLER:
                j -= 1
            k = j
            while k and out[k - 1][0] & 0x1F in (NAL_SLICE, NAL_IDR):
                k -= 1
            if k < j:
                out.insert(k, unit)
                continue
        if unit:
            out.append(unit)
    return b"".join(b"\x00\x00\x00\x01" + u for u in out)


def cea608_captions(flv: Path) -> str:
    """The CEA-608 captions of a recorded stream as SRT, decoded by FFmpeg (lavfi `subcc`)."""
    work = flv.parent
    raw, fixed, mp4, srt = (work / n for n in ("video.h264", "fixed.h264", "fixed.mp4", "captions.srt"))
    quiet = [ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    annexb = ["-map", "0:v", "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"]
    subprocess.run([*quiet, "-i", str(flv), *annexb, str(raw)], check=True)
    fixed.write_bytes(sei_before_slices(raw.read_bytes()))
    subprocess.run(
        [*quiet, "-fflags", "+genpts", "-r", "30", "-i", str(fixed), "-c", "copy", str(mp4)], check=True
    )
    subcc = ["-f", "lavfi", "-i", f"movie={mp4}[out0+subcc]", "-map", "0:s", "-c:s", "srt"]
    subprocess.run([*quiet, *subcc, str(srt)], check=True)
    return srt.read_text(encoding="utf-8", errors="replace")

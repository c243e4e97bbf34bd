"""`streamer run` as a subprocess under a test-owned NOTIFY_SOCKET, as systemd would start it.

The test binds an AF_UNIX datagram socket and passes its path in NOTIFY_SOCKET; every message
the daemon sends (READY=1, WATCHDOG=1, STATUS=..., RELOADING=1, STOPPING=1) is collected in
order by a reader thread, and tests wait on those messages, not on time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

Message = dict[str, str]


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[Message]], bool], what: str, timeout: float = 120.0) -> int:
        """Wait until pred(messages) holds; returns how many messages there were then."""
        with self._cond:
            if not self._cond.wait_for(lambda: pred(self.messages), timeout):
                raise AssertionError(f"timed out waiting for {what}; got {self.messages[-8:]}")
            return len(self.messages)

    def wait_message(self, key: str, start: int = 0, timeout: float = 120.0) -> int:
        """Index of the first message from `start` on that has `key`."""
        found: list[int] = []

        def pred(ms: list[Message]) -> bool:
            found[:] = [i for i in range(start, len(ms)) if key in ms[i]][:1]
            return bool(found)

        self.wait_for(pred, key, timeout)
        return found[0]

    def snapshot(self) -> list[Message]:
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._thread.join(2)


class Daemon:
    """`python -m streamer run ARGS` with NOTIFY_SOCKET (and WATCHDOG_USEC) set; stderr to a log."""

    def __init__(
        self, tmp: Path, args: list[str], env: dict[str, str] | None = None, watchdog_usec: int | None = None
    ) -> None:
        self.notify = NotifySocket(tmp / "notify.sock")
        self.log_path = tmp / "daemon.log"
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "NOTIFY_SOCKET": str(self.notify.path)}
        # This checkout's code, whatever the working directory (the daemon runs in `tmp`).
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        full_env.pop("STREAMER_CONFIG", None)
        if watchdog_usec is not None:
            full_env["WATCHDOG_USEC"] = str(watchdog_usec)
        full_env.update(env or {})
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=full_env,
            cwd=tmp,
        )
        # Keep stdout (--jsonl) drained so the daemon never blocks on a full pipe.
        self.stdout_lines: list[str] = []
        self._out = threading.Thread(target=self._drain, daemon=True)
        self._out.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode("utf-8", "replace"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.join(5)
        self._log.close()
        self.notify.close()


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)

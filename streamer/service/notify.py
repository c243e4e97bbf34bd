"""The systemd notify protocol: `KEY=VALUE` lines in one datagram to the socket in $NOTIFY_SOCKET.

Written here rather than taken from a library: the protocol is one `sendto` (sd_notify(3)), the
maintained binding (systemd-python) needs libsystemd headers and a compiler to install, and the
small pure-Python packages (sdnotify) have not been maintained for years. Without NOTIFY_SOCKET
(not started by systemd, or Type= is not notify) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def _address(raw: str) -> str | bytes:
    # '@name' is a Linux abstract-namespace socket: a leading NUL byte instead of a path.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def watchdog_interval(environ: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises),
    or None when the supervisor expects none (unset, zero, or meant for another process)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send the lines as one message; False (logged once at debug) if it could not be sent."""
        if self._sock is None or self.address is None:
            return False
        # A status line must not contain newlines: each line is a separate assignment.
        msg = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
        try:
            self._sock.sendto(msg, _address(self.address))
        except OSError as e:
            log.debug("notify %r: %s", lines, e)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC is required with RELOADING=1 by Type=notify-reload (systemd >= 253).
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self, status: str | None = None) -> None:
        self.send("WATCHDOG=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

"""systemd notification protocol (sd_notify) without libsystemd: a datagram to ``$NOTIFY_SOCKET``.

READY=1 once the model is loaded and audio flows, WATCHDOG=1 from the audio loop (so a stalled
microphone stops the pings and systemd restarts the service after ``WatchdogSec``), STATUS=... lines
for ``systemctl status``. Without ``NOTIFY_SOCKET`` (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("digitspot.systemd")


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        self.sock: socket.socket | None = None
        if address:
            # "@name" is an abstract-namespace socket (leading NUL byte)
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
        # WATCHDOG_USEC: systemd's timeout; ping at a third of it (default 10 s if unset but enabled)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if self.sock is not None and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_interval = max(0.5, int(usec) / 1e6 / 3) if usec else 1.0
            except ValueError:
                self.watchdog_interval = 1.0
        self._last_ping = 0.0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, message: str) -> None:
        if self.sock is None or self.address is None:
            return
        try:
            self.sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Call from the audio loop; sends WATCHDOG=1 at most every ``watchdog_interval`` seconds."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

"""systemd notifications: READY=1 once audio flows, WATCHDOG=1 from the audio loop, none when it stalls."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import numpy as np

from digitspot.edge.sd_notify import SystemdNotifier


def test_notifier_is_a_no_op_without_notify_socket():
    n = SystemdNotifier(environ={})
    assert not n.enabled
    n.ready("x")
    n.watchdog()
    n.status("y")
    n.close()


WATCHDOG_S = 0.9  # WATCHDOG_USEC given to the daemon: systemd restarts it after this long without a ping


def test_ready_and_watchdog_stop_when_the_source_stalls(daemon_factory, fixture_model, tmp_path):
    """While audio flows: READY=1, then WATCHDOG=1 again and again. When it stops (stdin open, nothing
    written): a silence longer than WATCHDOG_USEC, which is what makes systemd restart a hung daemon.
    Each step waits for its event with a deadline; nothing is asserted about how often pings come."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    received: list[str] = []

    def receive(timeout: float) -> str | None:
        sock.settimeout(timeout)
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            return None
        received.append(message)
        return message

    daemon = daemon_factory(["--model", str(fixture_model), "--source", "stdin", "--input-rate", "16000",
                             "--no-mqtt", "--log-level", "debug"], stdin=subprocess.PIPE,
                            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))})
    fd = daemon.proc.stdin.fileno()
    silence = (np.random.default_rng(0).normal(0, 30, 320)).astype("<i2").tobytes()  # 10 ms at 16 kHz

    def feed_until(done, deadline_s: float) -> bool:
        """Write 10 ms chunks, reading notifications in between, until ``done()`` or the deadline."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            os.write(fd, silence)
            receive(0.01)
            if done():
                return True
        return False

    def pings_after_ready() -> int:
        ready = next((i for i, m in enumerate(received) if m.startswith("READY=1")), None)
        return 0 if ready is None else received[ready:].count("WATCHDOG=1")

    assert feed_until(lambda: any(m.startswith("READY=1") for m in received), 30), received
    assert feed_until(lambda: pings_after_ready() >= 3, 30), f"no repeated WATCHDOG=1 while audio flows: {received}"

    # The source stalls: the daemon finishes what it has read, then must fall silent for longer than
    # WATCHDOG_USEC. Pings keep coming only if something other than the audio loop sends them.
    deadline = time.monotonic() + 15
    quiet = False
    while time.monotonic() < deadline and not quiet:
        quiet = receive(WATCHDOG_S * 1.2) is None
    assert quiet, f"WATCHDOG=1 kept coming while no audio arrived: {received[-10:]}"
    assert daemon.proc.poll() is None, daemon.stderr()  # alive but silent: systemd's watchdog would fire

    daemon.proc.stdin.close()
    assert daemon.wait(15) == 0, daemon.stderr()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(m.startswith("STOPPING=1") for m in received):
        receive(0.1)
    assert any(m.startswith("STOPPING=1") for m in received), received
    sock.close()

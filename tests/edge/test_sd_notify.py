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


def test_ready_and_watchdog_stop_when_the_source_stalls(daemon_factory, fixture_model, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    received: list[tuple[float, str]] = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                received.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                pass

    daemon = daemon_factory(["--model", str(fixture_model), "--source", "stdin", "--input-rate", "16000",
                             "--no-mqtt", "--log-level", "debug"], stdin=subprocess.PIPE,
                            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "900000"})  # ping every 0.3 s
    fd = daemon.proc.stdin.fileno()
    silence = (np.random.default_rng(0).normal(0, 30, 320)).astype("<i2").tobytes()  # 10 ms at 16 kHz
    start = time.monotonic()
    while time.monotonic() - start < 2.0:  # audio flows for 2 s
        os.write(fd, silence)
        drain(0.01)
    stall_start = time.monotonic()
    drain(2.0)  # nothing written: the source stalls
    daemon.proc.stdin.close()
    assert daemon.wait(15) == 0, daemon.stderr()
    drain(0.3)
    messages = [m for _, m in received]
    assert any(m.startswith("READY=1") for m in messages), messages
    flowing = [t for t, m in received if m == "WATCHDOG=1" and t < stall_start]
    stalled = [t for t, m in received if m == "WATCHDOG=1" and stall_start + 0.1 < t < stall_start + 2.0]
    assert len(flowing) >= 3, messages
    assert not stalled, "WATCHDOG=1 kept coming while no audio arrived"
    assert any(m.startswith("STOPPING=1") for m in messages)
    sock.close()

"""The real microphone path, PyAudio -> PortAudio -> ALSA -> PulseAudio, against a virtual microphone.

A private PulseAudio server with a null sink; its monitor is the default source, and `paplay` into the
sink is what the "microphone" hears. Also: the microphone disappearing (server killed) is reported
on the status topic and retried, and the daemon carries on when it returns; and a microphone that
appears only after the daemon started (no server yet, so no capture device) is waited for.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import retained, run_cli

from digitspot.edge.audio_io import load_audio

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("pulseaudio") is None or shutil.which("paplay") is None,
                       reason="needs pulseaudio and pulseaudio-utils"),
]
pytest.importorskip("pyaudio")


class VirtualMic:
    def __init__(self, runtime_dir: Path):
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)}
        runtime_dir.mkdir(parents=True, exist_ok=True)
        runtime_dir.chmod(0o700)

    def start(self) -> None:
        subprocess.run(["pulseaudio", "-n", "--daemonize=yes", "--exit-idle-time=-1", "--disallow-exit",
                        "-L", "module-native-protocol-unix", "-L", "module-null-sink sink_name=virtmic"],
                       env=self.env, check=True, capture_output=True)
        for _ in range(50):
            if subprocess.run(["pactl", "set-default-source", "virtmic.monitor"], env=self.env,
                              capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("pulseaudio did not come up")

    def pid(self) -> int | None:
        p = Path(self.env["XDG_RUNTIME_DIR"]) / "pulse" / "pid"
        try:
            return int(p.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def play(self, wav: Path) -> None:
        subprocess.run(["paplay", "-d", "virtmic", str(wav)], env=self.env, check=True, timeout=60)


@pytest.fixture
def mic(tmp_path):
    m = VirtualMic(tmp_path / "xdg")
    m.start()
    yield m
    m.stop()


def wait_until(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_devices_lists_the_virtual_microphone(mic):
    result = run_cli(["devices", "--json"], env={"XDG_RUNTIME_DIR": mic.env["XDG_RUNTIME_DIR"]})
    assert result.returncode == 0, result.stderr
    names = [json.loads(line)["name"] for line in result.stdout.decode().splitlines()]
    assert "pulse" in names


def test_capture_through_pulseaudio_and_survive_losing_the_mic(mic, broker, subscriber_factory, daemon_factory,
                                                               fsdd_dir, fixture_model, tmp_path):
    digits = ["4_jackson_1.wav", "8_george_0.wav"]
    wav = tmp_path / "say.wav"
    parts = [np.zeros(2400, np.float32)]
    for name in digits:
        parts += [load_audio(fsdd_dir / name, 8000), np.zeros(6400, np.float32)]
    sf.write(str(wav), np.concatenate(parts), 8000, subtype="PCM_16")
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/mic/#"])
    daemon = daemon_factory(["--model", str(fixture_model), "--source", "mic", "--device", "pulse",
                             "--capture-rate", "48000", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                             "--device-id", "mic", "--print", "--log-level", "info"],
                            env={"XDG_RUNTIME_DIR": mic.env["XDG_RUNTIME_DIR"]})
    assert wait_until(lambda: "ready: audio is flowing" in daemon.stderr(), 20), daemon.stderr()
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.payload == b"online" for m in ms), 10)
    mic.play(wav)
    assert wait_until(lambda: len(daemon.events()) >= 2, 5), daemon.stderr()
    assert [e["digit"] for e in daemon.events()] == [4, 8]
    assert "48000 Hz" in daemon.stderr()

    mic.stop()  # the microphone goes away
    assert wait_until(lambda: "lost" in daemon.stderr(), 10), daemon.stderr()
    assert sub.wait_for(lambda ms: [m for m in ms if m.topic.endswith("/status")][-1].payload == b"offline", 10)
    assert daemon.proc.poll() is None, "daemon died when the microphone went away"
    mic.start()  # and comes back
    assert wait_until(lambda: "back at" in daemon.stderr(), 30), daemon.stderr()
    assert sub.wait_for(lambda ms: [m for m in ms if m.topic.endswith("/status")][-1].payload == b"online", 10)
    mic.play(wav)
    assert wait_until(lambda: len(daemon.events()) >= 4, 5), daemon.stderr()
    assert [e["digit"] for e in daemon.events()] == [4, 8, 4, 8]
    delivered = {json.loads(m.payload)["seq"] for m in sub.on("/digit")}
    assert sub.wait_for(lambda ms: len({json.loads(m.payload)["seq"] for m in ms if m.topic.endswith("/digit")}) == 4, 5), delivered

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert "Traceback" not in daemon.stderr()


class NotifySocket:
    """Stands in for systemd's $NOTIFY_SOCKET: records every sd_notify datagram the daemon sends."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while self.running:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def count(self, prefix: str) -> int:
        return sum(m.startswith(prefix) for m in list(self.messages))

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def status_payloads(messages) -> list[bytes]:
    return [m.payload for m in messages if m.topic.endswith("/status")]


def info_reasons(messages) -> list[str | None]:
    return [m.json()["offline_reason"] for m in messages if m.topic.endswith("/info")]


def test_microphone_plugged_in_after_start(broker, subscriber_factory, daemon_factory, fsdd_dir, fixture_model,
                                           tmp_path):
    """No capture device at start: the daemon keeps running, says offline and why, keeps systemd from
    giving up on it, and sends READY=1 and online once the device appears and audio flows."""
    mic = VirtualMic(tmp_path / "xdg")  # not started yet: no sound server, so PortAudio has no "pulse" device
    # The client library must not spawn a server of its own when the daemon probes for one.
    client_conf = tmp_path / "pulse-client.conf"
    client_conf.write_text("autospawn = no\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    wav = tmp_path / "say.wav"
    sf.write(str(wav), np.concatenate([np.zeros(2400, np.float32), load_audio(fsdd_dir / "4_jackson_1.wav", 8000),
                                       np.zeros(6400, np.float32)]), 8000, subtype="PCM_16")
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/late/#"])
    try:
        daemon = daemon_factory(["--model", str(fixture_model), "--source", "mic", "--device", "pulse",
                                 "--capture-rate", "48000", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                                 "--device-id", "late", "--print", "--log-level", "info"],
                                env={"XDG_RUNTIME_DIR": mic.env["XDG_RUNTIME_DIR"], "PULSE_CLIENTCONFIG": str(client_conf),
                                     "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1500000"})  # ping every 0.5 s

        # Waiting: offline with the reason in the retained info, one log line, systemd kept at bay.
        assert sub.wait_for(lambda ms: b"offline" in status_payloads(ms), 20), daemon.stderr()
        reason = "no capture device matches 'pulse'"
        assert sub.wait_for(lambda ms: any(reason in (r or "") for r in info_reasons(ms)), 5)
        assert retained(broker.host, broker.port, "digitspot/late/status") == b"offline"
        assert wait_until(lambda: notify.count("WATCHDOG=1") >= 3, 10), notify.messages
        assert notify.count("EXTEND_TIMEOUT_USEC=") >= 1, notify.messages
        assert any(m.startswith("STATUS=waiting for audio: " + reason) for m in notify.messages), notify.messages
        assert notify.count("READY=1") == 0 and b"online" not in status_payloads(sub.on("/status"))
        assert daemon.proc.poll() is None, daemon.stderr()
        assert daemon.stderr().count("microphone not available") == 1, daemon.stderr()

        mic.start()  # the microphone is plugged in
        assert wait_until(lambda: "microphone 'pulse' open at 48000 Hz" in daemon.stderr(), 40), daemon.stderr()
        assert wait_until(lambda: notify.count("READY=1") == 1, 10), notify.messages
        assert sub.wait_for(lambda ms: status_payloads(ms)[-1] == b"online", 10), sub.on("/status")
        assert sub.wait_for(lambda ms: info_reasons(ms)[-1] is None, 5)
        assert retained(broker.host, broker.port, "digitspot/late/status") == b"online"

        mic.play(wav)
        assert wait_until(lambda: len(daemon.events()) >= 1, 10), daemon.stderr()
        assert [e["digit"] for e in daemon.events()] == [4]
        assert sub.wait_for(lambda ms: [m.json()["digit"] for m in ms if m.topic.endswith("/digit")] == [4], 5)

        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0, daemon.stderr()
        assert "Traceback" not in daemon.stderr()
    finally:
        mic.stop()
        notify.close()

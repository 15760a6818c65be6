"""The real microphone path, PyAudio -> PortAudio -> ALSA -> PulseAudio, against a virtual microphone.

A private PulseAudio server with a null sink; its monitor is the default source, and `paplay` into the
sink is what the "microphone" hears. Also: the microphone disappearing (server killed) is reported
on the status topic and retried, and the daemon carries on when it returns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import run_cli

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
                             "--device-id", "mic", "--print", "--min-confidence", "0.4", "--log-level", "info"],
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

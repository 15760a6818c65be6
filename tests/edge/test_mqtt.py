"""MQTT behaviour against a real Mosquitto: outage without loss, last will, SIGTERM, info and discovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import paho.mqtt.publish as mqtt_publish
import pytest
from helpers import retained
from streams import RATE, build_stream, pick_takes

from digitspot.edge.devtools.local_broker import LocalBroker

BASE = ["--log-level", "info"]


def wait_online(sub, timeout=15) -> bool:
    return sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.payload == b"online" for m in ms), timeout)


def feed_realtime(fd: int, pcm: bytes, on_progress=None) -> None:
    """Write s16le at 8 kHz in 10 ms chunks at real-time pace; on_progress(seconds) after each."""
    chunk = RATE // 100 * 2
    start = time.monotonic()
    for i, pos in enumerate(range(0, len(pcm), chunk)):
        delay = start + i * 0.01 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.write(fd, pcm[pos : pos + chunk])
        if on_progress:
            on_progress(i * 0.01)


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_keeps_order(tmp_path, subscriber_factory, daemon_factory,
                                                      fsdd_test_files, fixture_model):
    broker = LocalBroker(workdir=tmp_path / "broker", persistence=True).start()
    try:
        # A persistent session: the broker keeps the subscription and queues QoS 1 messages for it
        # across its own restart, whichever client reconnects first.
        sub = subscriber_factory(broker.host, broker.port, ["digitspot/outage/digit"],
                                 client_id="outage-checker", clean=False)
        stream = build_stream(pick_takes(fsdd_test_files, 16, seed=3), seed=3, gap_s=(0.5, 0.8),
                              noise_dbfs=-62, lead_s=0.5)
        daemon = daemon_factory(["--model", str(fixture_model), "--source", "stdin", "--input-rate", str(RATE),
                                 "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                                 "--device-id", "outage", "--print"] + BASE, stdin=subprocess.PIPE)
        status = subscriber_factory(broker.host, broker.port, ["digitspot/outage/status"])
        assert wait_online(status), daemon.stderr()  # connected and online before the first word
        events = {"stopped": None, "started": None}

        def progress(t: float) -> None:
            if t >= 4.0 and events["stopped"] is None:
                events["stopped"] = time.time()
                threading.Thread(target=broker.stop).start()
            if t >= 10.0 and events["started"] is None:
                events["started"] = time.time()
                threading.Thread(target=broker.start).start()

        feed_realtime(daemon.proc.stdin.fileno(), stream.s16le(), progress)
        daemon.proc.stdin.close()
        assert daemon.wait(timeout=60) == 0, daemon.stderr()
        printed = daemon.events()
        assert len(printed) >= 12, f"too few digits detected to test an outage: {len(printed)}"
        down = [e for e in printed if events["stopped"] * 1000 <= e["published_at"] <= events["started"] * 1000]
        assert down, "no digit was spoken while the broker was down"
        expected = [e["seq"] for e in printed]
        assert sub.wait_for(lambda ms: {json.loads(m.payload)["seq"] for m in ms} >= set(expected), timeout=20), \
            f"digits lost: {sorted(set(expected) - {json.loads(m.payload)['seq'] for m in sub.messages})}"
        seqs = []
        for m in sub.messages:  # first arrival of each seq, in arrival order (dedupe by seq)
            seq = json.loads(m.payload)["seq"]
            if seq not in seqs:
                seqs.append(seq)
        assert seqs == expected, f"out of order or extra: {seqs} vs {expected}"
        print(f"\n[outage] {len(expected)} digits, {len(down)} spoken during the {events['started'] - events['stopped']:.1f} s"
              f" outage, {len(sub.messages) - len(seqs)} duplicate deliveries, all in order")
        assert "Traceback" not in daemon.stderr()
    finally:
        broker.close()


def test_kill9_leaves_last_will_offline(broker, subscriber_factory, daemon_factory, fixture_model):
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/k9/status"])
    daemon = daemon_factory(["--model", str(fixture_model), "--source", "stdin", "--mqtt-host", broker.host,
                             "--mqtt-port", str(broker.port), "--device-id", "k9"] + BASE, stdin=subprocess.PIPE)
    assert wait_online(sub), daemon.stderr()
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    assert sub.wait_for(lambda ms: ms and ms[-1].payload == b"offline", 10), "last will not delivered"
    assert retained(broker.host, broker.port, "digitspot/k9/status") == b"offline"


def test_sigterm_exits_0_offline_info_and_discovery(broker, subscriber_factory, daemon_factory, fixture_model):
    secret = "pw-Zq81-never-logged"
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/term/#", "homeassistant/event/#"])
    daemon = daemon_factory(["--model", str(fixture_model), "--source", "stdin", "--mqtt-host", broker.host,
                             "--mqtt-port", str(broker.port), "--device-id", "term", "--mqtt-username", "edge",
                             "--log-level", "debug"],
                            stdin=subprocess.PIPE, env={"DIGITSPOT_MQTT_PASSWORD": secret})
    assert wait_online(sub), daemon.stderr()
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/info") for m in ms), 5)
    info = sub.on("/info")[-1]
    body = info.json()
    assert body["schema_version"] == 1 and body["device_id"] == "term"
    assert body["model"]["sha256"] and body["versions"]["onnxruntime"]
    assert body["config"]["mqtt_password_set"] is True
    assert secret not in info.payload.decode()
    assert sub.wait_for(lambda ms: any(m.topic == "homeassistant/event/term/digit/config" for m in ms), 5)
    disc = [m for m in sub.messages if m.topic == "homeassistant/event/term/digit/config"]
    config = disc[-1].json()
    assert config["event_types"] == [str(d) for d in range(10)]
    assert config["state_topic"] == "digitspot/term/digit"
    assert config["availability_topic"] == "digitspot/term/status"
    assert config["unique_id"] and config["device"]["identifiers"]
    # Home Assistant 2025.10+ reads default_entity_id (domain included); older releases read object_id.
    assert config["default_entity_id"] == "event.digitspot_term_digit"
    assert config["object_id"] == "digitspot_term_digit"
    # Home Assistant restarts: discovery is sent again
    n = len(disc)
    mqtt_publish.single("homeassistant/status", "online", hostname=broker.host, port=broker.port)
    assert sub.wait_for(lambda ms: sum(m.topic == "homeassistant/event/term/digit/config" for m in ms) > n, 5)

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(15) == 0, daemon.stderr()
    assert sub.wait_for(lambda ms: [m for m in ms if m.topic.endswith("/status")][-1].payload == b"offline", 5)
    assert retained(broker.host, broker.port, "digitspot/term/status") == b"offline"
    assert secret not in daemon.stderr()
    assert "Traceback" not in daemon.stderr()


def test_no_discovery_flag(broker, subscriber_factory, daemon_factory, fixture_model, fsdd_test_files):
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/nd/#", "homeassistant/#"])
    daemon = daemon_factory(["--model", str(fixture_model), "--source", "stdin", "--input-rate", str(RATE),
                             "--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--device-id", "nd",
                             "--no-discovery"], stdin=subprocess.PIPE)
    assert wait_online(sub)
    # One word after connecting: whatever the daemon publishes on connecting (discovery, when it is on)
    # reaches the subscriber before the word's digit does.
    daemon.proc.stdin.write(build_stream(fsdd_test_files[:1], noise_dbfs=-70, lead_s=0.5).s16le())
    daemon.proc.stdin.close()
    assert sub.wait_for(lambda ms: any(m.topic == "digitspot/nd/digit" for m in ms), 15), daemon.stderr()
    assert not [m for m in sub.messages if m.topic.startswith("homeassistant/")]
    assert daemon.wait(15) == 0


def test_print_works_without_any_broker(daemon_factory, fixture_model, tmp_path):
    """--print with an unreachable broker: digits still reach stdout; at EOF the daemon says the digit was
    not delivered and exits 69."""
    wav = tmp_path / "one.wav"
    import soundfile as sf

    from digitspot.edge.audio_io import load_audio
    from digitspot.edge.devtools.local_broker import free_port

    audio = load_audio(min(fsdd_files()), 8000)
    import numpy as np

    sf.write(str(wav), np.concatenate([np.zeros(4000, np.float32), audio, np.zeros(4000, np.float32)]), 8000)
    daemon = daemon_factory(["--model", str(fixture_model), "--source", "file", "--input", str(wav), "--print",
                             "--mqtt-port", str(free_port()), "--min-confidence", "0.3"])
    assert daemon.wait(30) == 69, daemon.stderr()
    assert len(daemon.events()) == 1
    assert "cannot connect to MQTT broker" in daemon.stderr()
    assert "1 of 1 digit(s) were NOT delivered" in daemon.stderr()


def fsdd_files():
    from pathlib import Path

    d = Path(os.environ.get("FSDD_DIR", Path(__file__).resolve().parents[3] / "shared/data/fsdd/recordings"))
    return [p for p in d.glob("0_jackson_0.wav")]

"""End to end, as a user runs it: the daemon as a subprocess, a real Mosquitto, an independent subscriber.

A stream of FSDD official-test takes with random 0.5-1.5 s gaps over white background noise (plus a
4 s stretch of louder noise alone) is played in real time, from a file (``--source file --realtime``)
and through stdin (written at real-time pace by this test, like ``arecord | digitspot-edge``).
Exactly one message per utterance, none in the noise stretch, and on the fixture model exactly the digits
it is known to publish (golden values: the segmenter and the model decide on the samples, not on the
clock, so a stream gives the same digits every run). Latency percentiles are printed (run pytest with -s
to see them), never asserted: timing depends on the machine.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from helpers import FIXTURE_MODEL, percentiles
from streams import RATE, build_stream, match, pick_takes

pytestmark = pytest.mark.slow

MQTT_ARGS = ["--device-id", "e2e", "--log-level", "info", "--no-discovery"]


# What the fixture model publishes wrong on each stream below, by utterance: {stream file name: digit}.
# Every other utterance comes out as the digit spoken. (8_george_4 is one of the fixture's five misses
# among the 300 official test takes.)
FIXTURE_WRONG = {"file --realtime": {}, "stdin": {"8_george_4.wav": 6}}
OTHER_MODEL_MAX_WRONG = 1  # DIGITSPOT_TEST_MODEL=another model: no golden values; at most one miss per stream


def unique_digits(sub) -> list:
    seen, out = set(), []
    for m in sub.on("/digit"):
        d = m.json()
        if d["seq"] not in seen:
            seen.add(d["seq"])
            out.append((d, m.at))
    return out


def check(stream, received, label: str, model) -> dict:
    events = [d for d, _ in received]
    outcome = match(stream, events)
    n = len(stream.utterances)
    print(f"\n[{label}] {n} utterances: {outcome['correct']} correct, {outcome['wrong']} wrong, "
          f"{outcome['missed']} missed, {outcome['extra']} extra ({outcome['in_noise']} in noise)")
    assert outcome["in_noise"] == 0, "a digit was published during the noise-only stretch"
    assert outcome["missed"] == 0 and outcome["extra"] == 0, f"not exactly one message per utterance: {outcome}"
    wrong = {u.path: d["digit"] for u, d in outcome["pairs"] if d["digit"] != u.digit}
    if model == FIXTURE_MODEL:
        assert wrong == FIXTURE_WRONG[label], f"the fixture model's digits changed: {wrong}"
    else:
        assert len(wrong) <= OTHER_MODEL_MAX_WRONG, f"{model.name} heard {len(wrong)} of {n} wrong: {wrong}"
    return outcome


def test_file_realtime_end_to_end(broker, subscriber_factory, daemon_factory, fsdd_test_files, e2e_model, tmp_path):
    stream = build_stream(pick_takes(fsdd_test_files, 50, seed=11), seed=11, noise_dbfs=-60, noise_only_s=4)
    wav = stream.write(tmp_path / "stream.wav")
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/e2e/#"])
    daemon = daemon_factory(["--model", str(e2e_model), "--source", "file", "--input", str(wav), "--realtime",
                             "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)] + MQTT_ARGS)
    assert daemon.wait(timeout=len(stream.audio) / RATE + 60) == 0, daemon.stderr()
    sub.wait_for(lambda ms: sum(m.topic.endswith("/digit") for m in ms) >= 50, timeout=3)
    received = unique_digits(sub)
    outcome = check(stream, received, "file --realtime", e2e_model)
    # Latency: the daemon's own clock maps stream offsets to wall time (speech_end <-> audio_end_ms),
    # so the utterance's real last sample is at speech_end + (true end - audio_end_ms).
    arrival = {d["seq"]: at for d, at in received}
    lat = []
    for u, d in outcome["pairs"]:
        true_end = d["speech_end"] / 1000 + (u.end / RATE - d["audio_end_ms"] / 1000)
        lat.append((arrival[d["seq"]] - true_end) * 1000)
    print(f"[file --realtime] end of utterance -> subscriber: {percentiles(lat)}")
    print(f"[file --realtime] daemon-reported latency_ms: {percentiles([d['latency_ms'] for d, _ in received])}")
    assert retained_status(sub) == b"offline"


def retained_status(sub) -> bytes | None:
    status = sub.on("/status")
    return status[-1].payload if status else None


def test_stdin_end_to_end(broker, subscriber_factory, daemon_factory, fsdd_test_files, e2e_model):
    """Raw s16le at 8 kHz on stdin, written in 10 ms chunks at real-time pace; latency measured as the
    benchmarks do: from the write of an utterance's last sample to the subscriber's arrival."""
    stream = build_stream(pick_takes(fsdd_test_files, 25, seed=5), seed=5, noise_dbfs=-60, noise_only_s=3)
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/e2e/#"])
    daemon = daemon_factory(["--model", str(e2e_model), "--source", "stdin", "--input-rate", str(RATE),
                             "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)] + MQTT_ARGS,
                            stdin=subprocess.PIPE)
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.payload == b"online" for m in ms), 15)
    pcm = stream.s16le()
    chunk = RATE // 100 * 2  # 10 ms
    ends = sorted(u.end * 2 for u in stream.utterances)
    written_at: dict[int, float] = {}
    fd = daemon.proc.stdin.fileno()
    start = time.monotonic()
    e = 0
    for i, pos in enumerate(range(0, len(pcm), chunk)):
        due = start + i * 0.01
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        os.write(fd, pcm[pos : pos + chunk])
        now = time.time()
        while e < len(ends) and ends[e] <= pos + chunk:
            written_at[ends[e]] = now
            e += 1
    daemon.proc.stdin.close()
    assert daemon.wait(timeout=30) == 0, daemon.stderr()
    sub.wait_for(lambda ms: sum(m.topic.endswith("/digit") for m in ms) >= 25, timeout=3)
    received = unique_digits(sub)
    outcome = check(stream, received, "stdin", e2e_model)
    arrival = {d["seq"]: at for d, at in received}
    lat = [(arrival[d["seq"]] - written_at[u.end * 2]) * 1000 for u, d in outcome["pairs"]]
    print(f"[stdin] last sample written -> subscriber: {percentiles(lat)}")
    assert retained_status(sub) == b"offline"
    assert "Traceback" not in daemon.stderr()

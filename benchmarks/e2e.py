"""End to end through the real daemon and a real broker, and the daemon's throughput and footprint.

The latency definition is :data:`LATENCY_DEFINITION` (it is copied into every report).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click
import numpy as np

from digitspot.benchmarks.audio import LabelledStream
from digitspot.benchmarks.daemon import Daemon, Subscriber, daemon_command, proc_cpu_seconds, proc_rss_mb
from digitspot.benchmarks.matching import Detection, WordTimes, match
from digitspot.benchmarks.stats import poisson_rate, summarize
from digitspot.benchmarks.subscriber import now_ns

CHUNK_MS = 10

LATENCY_DEFINITION = [
    ("The labelled stream is fed to `digitspot-edge run --source stdin` as raw s16le in 10 ms chunks, each "
    "written when CLOCK_MONOTONIC reaches its due time (t0 + k x 10 ms), like a sound card delivering periods."),
    ("A word's end time is the moment the write() of the chunk holding its last sample returned: from then on "
    "the sample is in the kernel pipe, readable by the daemon, as a microphone period is once the driver has "
    "delivered it. Words are trimmed to the end of their last run of >= 30 ms above -35 dB of their loudest "
    "10 ms frame, so the end of the samples is the end of speech (untrimmed FSDD files carry up to ~0.8 s of "
    "trailing silence, which would flatter the daemon)."),
    ("An independent subscriber process stamps each `<prefix>/digit` message with CLOCK_MONOTONIC in paho's "
    "on_message. CLOCK_MONOTONIC is one system-wide clock on Linux, shared by all processes, so the "
    "difference of the two stamps is the latency with no clock offset to estimate: that is why it is exact, "
    "up to the scheduler's wake-up jitter, which is reported as the feeder's lateness."),
]
READY_TIMEOUT_S = 60


def _topic_prefix(tag: str) -> tuple[str, str]:
    tag = re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-")  # no MQTT wildcards (+, #) in topics
    device_id = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
    return device_id, f"digitspot-bench/{device_id}"


def _start(model: Path, host: str, port: int, tag: str, rate: int, *, capture_stdout: bool,
           with_subscriber: bool, extra: list[str] | None = None, input_file: Path | None = None):
    device_id, prefix = _topic_prefix(tag)
    subscriber = Subscriber(host, port, [f"{prefix}/#"]) if with_subscriber else None
    cmd = daemon_command(model, host=host, port=port, device_id=device_id, topic_prefix=prefix,
                         input_rate=rate, print_events=capture_stdout, extra=extra, input_file=input_file)
    daemon = Daemon(cmd, capture_stdout=capture_stdout)
    return daemon, subscriber, prefix


def _wait_ready(daemon: Daemon, subscriber: Subscriber | None, prefix: str) -> float:
    """Seconds from spawn until the retained ``online`` status arrived (model loaded, audio up)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    if subscriber is None:
        # no subscriber (throughput runs): the daemon is ready when it reads; writing blocks until then
        return float("nan")
    while time.monotonic() < deadline:
        hit = subscriber.wait_for_message(f"{prefix}/status", "online", timeout=0.5)
        if hit:
            return (hit["t_ns"] - daemon.started_ns) / 1e9
        if not daemon.alive():
            break
    raise RuntimeError("daemon did not come online: " + " | ".join(daemon.stderr_tail(8)))


def feed_paced(daemon: Daemon, pcm: bytes, rate: int, *, label: str, chunk_ms: int = CHUNK_MS) -> dict[str, Any]:
    """Write ``pcm`` in ``chunk_ms`` chunks on the monotonic clock; returns per-chunk entry times (ns)."""
    chunk_bytes = rate * chunk_ms // 1000 * 2
    n_chunks = -(-len(pcm) // chunk_bytes)
    entry = np.zeros(n_chunks, dtype=np.int64)
    late = np.zeros(n_chunks, dtype=np.float64)
    period = chunk_ms * 1_000_000
    t0 = now_ns() + 20_000_000
    seconds_per_tick = max(1, 1000 // chunk_ms)
    with click.progressbar(length=n_chunks // seconds_per_tick, label=f"  {label} (real time)",
                           file=click.get_text_stream("stderr")) as bar:
        for k in range(n_chunks):
            due = t0 + k * period
            wait = due - now_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            late[k] = (now_ns() - due) / 1e6
            entry[k] = daemon.write(pcm[k * chunk_bytes:(k + 1) * chunk_bytes])
            if k % seconds_per_tick == seconds_per_tick - 1:
                bar.update(1)
    return {"entry_ns": entry, "chunk_samples": rate * chunk_ms // 1000,
            "lateness_ms": summarize(late, bootstrap=0), "t0_ns": t0}


def _finish(daemon: Daemon, subscriber: Subscriber | None, timeout: float = 60) -> int:
    daemon.close_input()
    code = daemon.wait(timeout)
    if subscriber is not None:
        time.sleep(0.5)  # QoS 1 messages published during shutdown
        subscriber.stop()
    return code


def run_e2e(stream: LabelledStream, model: Path, host: str, port: int, *, max_latency_s: float = 2.0
            ) -> dict[str, Any]:
    """The labelled stream in real time through daemon -> broker -> subscriber; latency and outcomes."""
    daemon, subscriber, prefix = _start(model, host, port, "e2e", stream.rate, capture_stdout=False,
                                        with_subscriber=True)
    try:
        ready_s = _wait_ready(daemon, subscriber, prefix)
        fed = feed_paced(daemon, stream.pcm16(), stream.rate, label="end-to-end stream")
        peak_rss = daemon.peak_rss_mb()
    finally:
        code = _finish(daemon, subscriber)
    entry, cs = fed["entry_ns"], fed["chunk_samples"]
    words = [WordTimes(u.digit, entry[u.start // cs] / 1e9, entry[(u.end - 1) // cs] / 1e9)
             for u in stream.utterances]
    digit_msgs = [m for m in subscriber.messages() if m["topic"] == f"{prefix}/digit"]
    detections, reported = [], []
    for m in digit_msgs:
        payload = json.loads(m["payload"])
        detections.append(Detection(int(payload["digit"]), m["t_ns"] / 1e9, payload.get("confidence")))
        if isinstance(payload.get("latency_ms"), (int, float)):
            reported.append(float(payload["latency_ms"]))
    matched = match(words, detections, max_latency_s)
    info = next((m["payload"] for m in subscriber.messages() if m["topic"] == f"{prefix}/info"), None)
    try:
        daemon_info = json.loads(info) if info else None  # versions and effective config, as retained
    except json.JSONDecodeError:
        daemon_info = {"raw": info}
    gap_seconds = (stream.audio.size - sum(u.end - u.start for u in stream.utterances)) / stream.rate
    result = {
        "stream": stream.description,
        "feed": {"chunk_ms": CHUNK_MS, "source": "stdin s16le", "input_rate": stream.rate,
                 "writer_lateness_ms": fed["lateness_ms"]},
        "daemon_exit_code": code, "daemon_ready_s": ready_s, "daemon_peak_rss_mb": peak_rss,
        "latency_ms": summarize(matched["latencies_ms"]),
        "published_before_last_sample": sum(1 for w in matched["per_word"]
                                            if w["latency_ms"] is not None and w["latency_ms"] < 0),
        "latency_correct_only_ms": summarize([w["latency_ms"] for w in matched["per_word"]
                                              if w["outcome"] == "correct"]),
        "daemon_reported_latency_ms": summarize(reported),
        "outcomes": matched["counts"], "accuracy": matched["accuracy"],
        "extra_per_hour_of_gaps": poisson_rate(matched["counts"]["extra_unattributed"], gap_seconds / 3600),
        "per_word": matched["per_word"], "matching_rule": matched["rule"],
        "errors_by_digit": _error_pairs(matched["per_word"]),
        "latency_definition": LATENCY_DEFINITION,
        "stderr_tail": daemon.stderr_tail(),
        "daemon_info": daemon_info,
    }
    return result


def _error_pairs(per_word: list[dict[str, Any]]) -> dict[str, int]:
    """'8->6': 9, '8->missed': 6, ...: which spoken digits went wrong and how, most frequent first."""
    pairs: dict[str, int] = {}
    for w in per_word:
        if w["outcome"] != "correct":
            key = f"{w['digit']}->{'missed' if w['detected'] is None else w['detected']}"
            pairs[key] = pairs.get(key, 0) + 1
    return dict(sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])))


def run_unpaced(stream: LabelledStream, model: Path, host: str, port: int, *, label: str) -> dict[str, Any]:
    """The daemon on ``stream`` as fast as it can: real-time factor, CPU seconds, peak RSS, events.

    The audio goes in as a 16-bit WAV with ``--source file`` and no ``--realtime``, the daemon's own
    as-fast-as-possible path, so nothing outside the daemon (our writer, a pipe) sets the pace.
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="digitspot-bench-") as tmp:
        wav = Path(tmp) / f"{re.sub(r'[^a-z0-9]+', '-', label.lower())}.wav"
        sf.write(str(wav), np.clip(stream.audio, -1.0, 1.0), stream.rate, subtype="PCM_16")
        log_label = f"  {label}: {stream.seconds / 60:.1f} min of audio via --source file"
        click.echo(log_label, err=True)
        daemon, _, _ = _start(model, host, port, label, stream.rate, capture_stdout=True,
                              with_subscriber=False, input_file=wav)
        spawn = daemon.started_ns
        code = daemon.wait(timeout=max(600.0, stream.seconds))
        wall_s = (now_ns() - spawn) / 1e9
    usage = daemon.rusage
    cpu_s = usage.ru_utime + usage.ru_stime
    hours = stream.seconds / 3600
    events = daemon.events()
    return {
        "audio_seconds": round(stream.seconds, 2), "daemon_exit_code": code, "input": "--source file (16-bit WAV)",
        "wall_s": wall_s,
        "real_time_factor": wall_s / stream.seconds,
        "cpu_s": cpu_s, "cpu_s_per_audio_hour": cpu_s / hours,
        "cpu_user_s": usage.ru_utime, "cpu_system_s": usage.ru_stime,
        "peak_rss_mb": daemon.last_hwm_mb,
        "events": len(events), "words": len(stream.utterances),
        "events_per_hour": poisson_rate(len(events), hours),
        "event_digits": [e.get("digit") for e in events][:10000],
        "stderr_tail": daemon.stderr_tail(),
        "note": ("wall time is spawn to exit, so it includes the daemon's start-up (Python, onnxruntime, model "
                 "load) and reading the WAV; CPU seconds are the child's own rusage from wait4(); peak RSS is "
                 "its VmHWM from /proc polled every 0.1 s (wait4's ru_maxrss would include the parent's image "
                 "at spawn)"),
    }


def run_startup(model: Path, host: str, port: int, rate: int) -> dict[str, Any]:
    """Spawn to retained ``online``, and the CPU and RSS of a daemon that did nothing else."""
    daemon, subscriber, prefix = _start(model, host, port, "startup", rate, capture_stdout=False,
                                        with_subscriber=True)
    try:
        ready_s = _wait_ready(daemon, subscriber, prefix)
        time.sleep(0.5)
        peak_rss = daemon.peak_rss_mb()
    finally:
        code = _finish(daemon, subscriber)
    usage = daemon.rusage
    return {"ready_s": ready_s, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": peak_rss, "daemon_exit_code": code}


def run_idle_cpu(stream: LabelledStream, model: Path, host: str, port: int, *, settle_s: float = 3.0
                 ) -> dict[str, Any]:
    """The daemon listening in real time to speech-free audio: CPU % of one core over the window.

    CPU is read from /proc/<pid>/stat (utime+stime) after ``settle_s`` of feeding (start-up excluded)
    and at the end of the window; the percentage is that CPU time over the same wall time.
    """
    daemon, subscriber, prefix = _start(model, host, port, "idle", stream.rate, capture_stdout=False,
                                        with_subscriber=True)
    pcm = stream.pcm16()
    settle = int(settle_s * stream.rate) * 2
    try:
        _wait_ready(daemon, subscriber, prefix)
        feed_paced(daemon, pcm[:settle], stream.rate, label="idle settle")
        cpu0, t0 = proc_cpu_seconds(daemon.proc.pid), now_ns()
        feed_paced(daemon, pcm[settle:], stream.rate, label="idle listening")
        cpu1, t1 = proc_cpu_seconds(daemon.proc.pid), now_ns()
        rss = proc_rss_mb(daemon.proc.pid)
    finally:
        code = _finish(daemon, subscriber)
    window_s = (t1 - t0) / 1e9
    digits = [m for m in subscriber.messages() if m["topic"] == f"{prefix}/digit"]
    cpu = cpu1 - cpu0
    return {
        "window_s": window_s, "cpu_s": cpu, "cpu_percent_of_one_core": 100 * cpu / window_s,
        "cpu_s_per_hour_extrapolated": cpu / window_s * 3600,
        "cpu_tick_s": 1 / __import__("os").sysconf("SC_CLK_TCK"),
        "rss_mb_at_end": rss.get("VmRSS"), "peak_rss_mb": rss.get("VmHWM"),
        "false_triggers": len(digits), "daemon_exit_code": code, "audio": stream.description,
        "note": f"measured over {window_s:.0f} s of real-time listening and extrapolated linearly to an "
                "hour (the load is stationary: the same noise bed throughout)",
    }

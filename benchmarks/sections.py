"""One function per benchmark section; each fills its part of the report from a shared :class:`BenchRun`.

A section that raises is recorded in ``report["errors"]`` and the run goes on: one broken section must
not lose the others' results (and the verdict is FAIL whenever any section failed).
"""

from __future__ import annotations

import contextlib
import functools
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from digitspot.benchmarks import plots
from digitspot.benchmarks.audio import LabelledFile, LabelledStream, build_stream, noise_only_stream
from digitspot.benchmarks.machine import is_x86_64
from digitspot.benchmarks.plan import BenchPlan
from digitspot.edge.card import ModelCard
from digitspot.edge.devtools.plots import confusion_figure


def log(message: str) -> None:
    click.echo(f"[bench {time.strftime('%H:%M:%S')}] {message}", err=True)


@dataclass
class BenchRun:
    """What the sections share while they run: the plan, the model's card, the labelled audio, the report."""

    plan: BenchPlan
    card: ModelCard
    files: list[LabelledFile]
    clips: list[np.ndarray]
    stem: str
    report: dict[str, Any]
    started: float  # time.monotonic() at the start, for the report's wall time
    cpu_at_start: list[int] | None
    stream: LabelledStream | None = None  # the real-time word stream, shared by peer and e2e
    broker: tuple[str, int] | None = None  # MQTT (host, port) of e2e and throughput

    @property
    def rate(self) -> int:
        return self.card.sample_rate

    @property
    def digits(self) -> list[int]:
        return [f.digit for f in self.files]

    def figure(self, key: str) -> str:
        """File name of one of this report's PNGs (beside the report)."""
        return f"{self.stem}-{key}.png"

    def guarded(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None with the error recorded under ``name`` if it raises."""
        log(f"-- {name}")
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001  one broken section must not lose the others' results
            self.report["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} failed: {exc}\n{traceback.format_exc()}")
            return None


def inference_section(run: BenchRun) -> dict[str, Any]:
    """Latency of one 1-s window through each runtime, and the models' size figures."""
    from digitspot.benchmarks.inference import run_inference

    plan = run.plan
    clips = run.clips[:64] if len(run.clips) > 64 else run.clips
    res = run_inference({"int8": plan.model, "fp32": plan.fp32_model}, clips, runs=plan.counts.runs,
                        warmup=plan.counts.warmup, torchscript=plan.torchscript)
    series = {k: v["samples_ms"] for k, v in res["runtimes"].items() if "samples_ms" in v}
    t = plan.thresholds
    target = t.x86_inference_median_ms if is_x86_64() else t.inference_p99_ms
    if plots.latency_figure(plan.out_dir / run.figure("inference"), series, "Inference, 1-s window",
                            target_ms=target):
        res["figure"] = run.figure("inference")
    return res


def accuracy_section(run: BenchRun) -> dict[str, Any]:
    """``digitspot-edge classify`` on the test files, clean and corrupted."""
    from digitspot.benchmarks.accuracy import run_accuracy

    plan = run.plan
    res = run_accuracy(run.files, plan.model, run.rate, seed=plan.seed, pitch_method=plan.pitch_method)
    if confusion_figure(plan.out_dir / run.figure("confusion"), res["conditions"]["official"]["confusion"],
                        f"{run.card.name}: FSDD official test takes"):
        res["confusion_figure"] = run.figure("confusion")
    if plots.accuracy_figure(plan.out_dir / run.figure("accuracy"), res["conditions"]):
        res["figure"] = run.figure("accuracy")
    return res


def word_stream(run: BenchRun) -> LabelledStream:
    """The real-time stream of words over noise: ``--e2e-words`` test files spread over digits and speakers."""
    plan = run.plan
    pick = list(range(len(run.clips)))
    n_words = plan.counts.e2e_words
    if n_words and n_words < len(run.clips):
        step = len(run.clips) / n_words  # every k-th file of the sorted list
        pick = [int(i * step) for i in range(n_words)]
    return build_stream([run.clips[i] for i in pick], [run.digits[i] for i in pick],
                        [run.files[i].path.name for i in pick], run.rate, snr_db=plan.snr_db, noise=plan.noise,
                        seed=plan.seed)


def peer_section(run: BenchRun) -> dict[str, Any]:
    """PocketSphinx with a digit grammar on the same takes and the same stream."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return {"skipped": "pocketsphinx is not installed (pip install pocketsphinx; it is in the dev extra)"}
    from digitspot.benchmarks.peer import __doc__ as method
    from digitspot.benchmarks.peer import run_peer_stream, run_peer_utterances
    from digitspot.edge.classifier import OnnxDigitClassifier

    classifier = OnnxDigitClassifier(run.plan.model, threads=1)
    res = {"method": " ".join(method.split("\n\n", 1)[1].split()), "with_oh": run.plan.with_oh,
           "utterances": run_peer_utterances(run.clips, run.digits, run.rate, classifier,
                                             with_oh=run.plan.with_oh)}
    res["stream"] = run_peer_stream(run.stream, with_oh=run.plan.with_oh)
    return res


@contextlib.contextmanager
def mqtt_broker(run: BenchRun) -> Iterator[tuple[str, int] | None]:
    """``--broker``, or a private Mosquitto for the block; None (error recorded) when neither is there."""
    address = run.plan.broker_address()
    if address is not None:
        yield address
        return

    def start():
        from digitspot.edge.devtools.local_broker import LocalBroker

        return LocalBroker().start()

    broker = run.guarded("broker", start)
    if broker is None:
        yield None
        return
    log(f"private Mosquitto on {broker.host}:{broker.port}")
    try:
        yield broker.host, broker.port
    finally:
        broker.close()


def e2e_section(run: BenchRun) -> dict[str, Any]:
    """The word stream in real time through daemon -> Mosquitto -> subscriber: latency and outcomes."""
    from digitspot.benchmarks.e2e import run_e2e

    host, port = run.broker
    res = run_e2e(run.stream, run.plan.model, host, port)
    latencies = [w["latency_ms"] for w in res["per_word"] if w["latency_ms"] is not None]
    if plots.latency_figure(run.plan.out_dir / run.figure("e2e"), {"end of speech -> subscriber": latencies},
                            "End to end", target_ms=run.plan.thresholds.e2e_p95_ms):
        res["figure"] = run.figure("e2e")
    return res


def throughput_section(run: BenchRun) -> dict[str, Any]:
    """An hour of speech and an hour of noise as fast as possible, start-up, and idle CPU in real time.

    Each part is guarded on its own, so a failed start-up measurement keeps the hour's figures."""
    from digitspot.benchmarks.e2e import run_idle_cpu, run_startup, run_unpaced

    plan, model, rate = run.plan, run.plan.model, run.rate
    host, port = run.broker
    noise, snr_db, seed, hour_s = plan.noise, plan.snr_db, plan.seed, plan.counts.hour_seconds

    def unpaced(stream: LabelledStream, label: str) -> dict[str, Any]:
        return {**run_unpaced(stream, model, host, port, label=label), "audio": stream.description}

    thr: dict[str, Any] = {}
    hour = build_stream(run.clips, run.digits, [f.path.name for f in run.files], rate, snr_db=snr_db,
                        noise=noise, seed=seed + 1, repeat_to_s=hour_s)
    thr["speech_hour"] = run.guarded("throughput speech", functools.partial(unpaced, hour, "speech+noise"))
    del hour  # an hour of audio in memory: free it before the next one
    quiet = noise_only_stream(hour_s, rate, noise=noise, snr_db=snr_db, seed=seed + 2)
    thr["noise_hour"] = run.guarded("throughput noise", functools.partial(unpaced, quiet, "noise-only"))
    del quiet
    thr["startup"] = run.guarded("startup", lambda: run_startup(model, host, port, rate))
    idle_audio = noise_only_stream(plan.counts.idle_seconds + 3.0, rate, noise=noise, snr_db=snr_db,
                                   seed=seed + 3, bursts_per_minute=0)
    thr["idle"] = run.guarded("idle cpu", lambda: run_idle_cpu(idle_audio, model, host, port))
    return thr


def run_sections(run: BenchRun) -> None:
    """Every planned section in order, each result in ``run.report`` under the section's name."""
    plan, report = run.plan, run.report
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if plan.wants("inference"):
        report["inference"] = run.guarded("inference", lambda: inference_section(run))
    if plan.wants("accuracy"):
        report["accuracy"] = run.guarded("accuracy", lambda: accuracy_section(run))
    if plan.wants("e2e", "peer"):
        run.stream = word_stream(run)
    if plan.wants("peer"):
        report["peer"] = run.guarded("peer", lambda: peer_section(run))
    if not plan.wants("e2e", "throughput"):
        return
    with mqtt_broker(run) as address:
        run.broker = address
        if address is None:
            report["errors"].setdefault("broker", "no MQTT broker: end-to-end and throughput not measured")
            return
        if plan.wants("e2e"):
            report["e2e"] = run.guarded("e2e", lambda: e2e_section(run))
            if report.get("peer") and report["e2e"] and "stream" in report["peer"]:
                report["peer"]["ours_stream"] = {"counts": report["e2e"]["outcomes"],
                                                 "accuracy": report["e2e"]["accuracy"]}
        if plan.wants("throughput"):
            report["throughput"] = run.guarded("throughput", lambda: throughput_section(run))

"""``python -m digitspot.benchmarks``: run the benchmarks, write the report, exit 1 when a gated target is missed.

Three steps: the command line becomes a :class:`~digitspot.benchmarks.plan.BenchPlan`; the sections run
(``digitspot.benchmarks.sections``, one function each); the report step completes, writes and judges the
report (``digitspot.benchmarks.report``).
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from digitspot.benchmarks import SCHEMA_VERSION
from digitspot.benchmarks.machine import cpu_times, is_x86_64, machine_busy, machine_info
from digitspot.benchmarks.plan import ROOT, SECTIONS, BenchPlan, Counts, default_data_dir, report_stem
from digitspot.benchmarks.report import Thresholds
from digitspot.benchmarks.sections import BenchRun, log, run_sections


def _check_broker(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    _host, sep, port = (value or "").rpartition(":")
    if value is not None and (not sep or not port.isdigit() or not 0 < int(port) < 65536):
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 192.168.1.5:1883)")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                                 "max_content_width": 110})
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="INT8 ONNX model with its card  [default: the shipped artifact]")
@click.option("--fp32-model", type=click.Path(path_type=Path), default=None,
              help="FP32 ONNX model  [default: digitspot-fp32.onnx beside --model]")
@click.option("--torchscript", type=click.Path(path_type=Path), default=None,
              help="TorchScript model  [default: digitspot.pt beside --model; skipped without torch]")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="FSDD recordings (official test takes used) or any labelled WAV folder  [default: $FSDD_DIR]")
@click.option("--short", is_flag=True, help="Small counts: a couple of minutes, figures indicative only")
@click.option("--only", multiple=True, type=click.Choice(SECTIONS), help="Run only these sections (repeatable)")
@click.option("--runs", type=int, default=None, help="Timed inference runs  [default: 2000, short 200]")
@click.option("--warmup", type=int, default=None, help="Warm-up inference runs  [default: 200, short 20]")
@click.option("--e2e-words", type=int, default=None,
              help="Words in the end-to-end stream  [default: every test take (300), short 20]")
@click.option("--hour-seconds", type=float, default=None,
              help="Length of the 'hour' of audio for throughput and false triggers  [default: 3600, short 60]")
@click.option("--idle-seconds", type=float, default=None,
              help="Real-time speech-free listening window for CPU %  [default: 120, short 8]")
@click.option("--snr-db", type=float, default=20.0, help="Background noise level of the streams, dB below speech")
@click.option("--noise", type=click.Choice(["pink", "white"]), default="pink", help="Background noise colour")
@click.option("--seed", type=int, default=0, help="Seed for streams, gaps and noise")
@click.option("--broker", default=None, metavar="HOST:PORT", callback=_check_broker,
              help="Use this MQTT broker instead of starting a private Mosquitto")
@click.option("--daemon-command", default=None, metavar="CMD",
              help="Command that runs the daemon  [default: this Python's `-m digitspot.edge run`], e.g. "
                   "'/opt/digitspot/venv/bin/digitspot-edge run'")
@click.option("--pitch-method", type=click.Choice(["wsola", "resample"]), default="wsola",
              help="Pitch shift of the accuracy suite: duration-preserving (wsola) or tape-style (resample)")
@click.option("--with-oh", is_flag=True, help="Let PocketSphinx's grammar also accept 'oh' for 0")
@click.option("--max-p99-ms", type=float, default=15.0, help="Gate: INT8 inference p99")
@click.option("--max-e2e-p95-ms", type=float, default=150.0, help="Gate: end of speech -> subscriber p95")
@click.option("--max-e2e-p50-ms", type=float, default=100.0, help="Gate: end of speech -> subscriber p50")
@click.option("--out-dir", type=click.Path(path_type=Path), default=ROOT / "benchmarks" / "results",
              help="Where the report goes")
@click.option("--stem", default=None,
              help="Report file name stem  [default: <host>-<UTC time>-<first 8 hex digits of the model's sha256>]")
def main(model, fp32_model, torchscript, data_dir, short, only, runs, warmup, e2e_words, hour_seconds,
         idle_seconds, snr_db, noise, seed, broker, daemon_command, pitch_method, with_oh, max_p99_ms,
         max_e2e_p95_ms, max_e2e_p50_ms, out_dir, stem) -> None:
    """The benchmarks: inference latency, end to end through the daemon and Mosquitto, throughput and
    footprint, PocketSphinx side by side, and the accuracy suite. Writes
    OUT_DIR/<host>-<UTC time>-<model sha8>.{json,md} plus PNGs and exits 1 when a gated target is missed (or
    a section could not run), 0 otherwise; 65/66 when the model or the audio folder cannot be used.
    """
    from digitspot.edge.classifier import default_model_path

    model = Path(model) if model else default_model_path()
    plan = BenchPlan(
        model=model, fp32_model=fp32_model or model.parent / "digitspot-fp32.onnx",
        torchscript=torchscript or model.parent / "digitspot.pt", data_dir=data_dir or default_data_dir(),
        sections=tuple(s for s in SECTIONS if not only or s in only), only=bool(only), short=short,
        counts=Counts.for_mode(short, runs=runs, warmup=warmup, e2e_words=e2e_words, hour_seconds=hour_seconds,
                               idle_seconds=idle_seconds),
        snr_db=snr_db, noise=noise, seed=seed, pitch_method=pitch_method, with_oh=with_oh, broker=broker,
        daemon_command=daemon_command,
        thresholds=Thresholds(inference_p99_ms=max_p99_ms, e2e_p95_ms=max_e2e_p95_ms, e2e_p50_ms=max_e2e_p50_ms),
        out_dir=out_dir, stem=stem)
    run = prepare(plan)
    run_sections(run)
    sys.exit(report_step(run))


def prepare(plan: BenchPlan) -> BenchRun:
    """Load the model's card and the labelled audio, and start the report; exits 65/66 when either is unusable."""
    from digitspot.benchmarks.audio import labelled_files, load_labelled
    from digitspot.edge.card import load_card
    from digitspot.edge.errors import EXIT_NOINPUT, DigitspotError

    started, cpu_at_start = time.monotonic(), cpu_times()
    if plan.daemon_command:
        from digitspot.benchmarks import daemon as daemon_module

        daemon_module.daemon_prefix[:] = shlex.split(plan.daemon_command)
    try:
        card = load_card(plan.model, verify=True)
    except DigitspotError as exc:  # nothing can run without the model: one line, edge's exit code (65/66)
        click.echo(f"benchmarks: error: cannot use model {plan.model}: {exc}", err=True)
        sys.exit(exc.exit_code)
    try:
        files = labelled_files(plan.data_dir, plan.counts.per_digit)
    except FileNotFoundError as exc:
        click.echo(f"benchmarks: error: {exc}", err=True)
        sys.exit(EXIT_NOINPUT)
    now = dt.datetime.now(dt.UTC)
    machine = machine_info()
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "short" if plan.short else "full",
        "command": shlex.join(["python", "-m", "digitspot.benchmarks", *sys.argv[1:]]),
        "machine": machine, "counts": asdict(plan.counts), "sections": list(plan.sections), "errors": {},
        "figures": {}, "settings": plan.settings(),
        "model": {"path": str(plan.model), "name": card.name, "sha256": card.sha256,
                  "file_size_bytes": card.file_size_bytes, "quantization": card.quantization.scheme,
                  "metrics_in_card": card.metrics},
    }
    run = BenchRun(plan=plan, card=card, files=files, clips=load_labelled(files, card.sample_rate),
                   stem=plan.stem or report_stem(machine["host"], now, card.sha256), report=report,
                   started=started, cpu_at_start=cpu_at_start)
    log(f"{len(files)} labelled files from {plan.data_dir}; model {plan.model.name}; "
        f"sections {', '.join(plan.sections)}")
    return run


def report_step(run: BenchRun) -> int:
    """Complete the report, write it, print the targets; the exit code (0 pass, 1 fail).

    Only the report's own files are written: the README and docs/ take their figures from the newest
    report through ``make docs``."""
    from digitspot.benchmarks.report import complete_report, targets_table, write_report

    plan, report = run.plan, run.report
    report["machine_busy"] = machine_busy(run.cpu_at_start, cpu_times())
    report["wall_s"] = time.monotonic() - run.started
    complete_report(report, plan.thresholds, is_x86_64(), plan.only)
    json_path, md_path = write_report(report, plan.out_dir, run.stem)
    click.echo("\n".join(targets_table(report["targets"])))
    click.echo(f"\nreport: {json_path} and {md_path} ({report['wall_s']:.0f} s)")
    if not report["passed"]:
        missed = [r["id"] for r in report["targets"] if r["gated"] and r["passed"] is not True]
        click.echo(f"FAIL: {', '.join(missed) or 'errors'}"
                   + (f"; errors in {', '.join(report['errors'])}" if report["errors"] else ""), err=True)
        return 1
    click.echo("PASS: every gated target met")
    return 0

"""``python -m digitspot.benchmarks``: run the benchmarks, write the report, exit 1 when a gated target is missed."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from digitspot.benchmarks import SCHEMA_VERSION
from digitspot.benchmarks.machine import cpu_times, is_x86_64, machine_busy, machine_info

SECTIONS = ("inference", "accuracy", "peer", "e2e", "throughput")
ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path:
    env = os.environ.get("FSDD_DIR")
    if env:
        return Path(env)
    for candidate in (ROOT / "data" / "fsdd" / "recordings", ROOT.parent / "shared" / "data" / "fsdd" / "recordings"):
        if candidate.is_dir():
            return candidate
    return ROOT / "data" / "fsdd" / "recordings"


def _sibling(model: Path, name: str) -> Path:
    return model.parent / name


def log(message: str) -> None:
    click.echo(f"[bench {time.strftime('%H:%M:%S')}] {message}", err=True)


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
@click.option("--broker", default=None, metavar="HOST:PORT",
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
@click.option("--stem", default=None, help="Report file name stem  [default: <host>-<UTC date>]")
@click.option("--readme", type=click.Path(path_type=Path), default=None,
              help="Also put the headline table between the bench markers of this README (make bench: README.md)")
@click.option("--docs", type=click.Path(path_type=Path), default=None,
              help="Also write this Markdown page with the headline table (make bench: docs/bench.md)")
def main(model, fp32_model, torchscript, data_dir, short, only, runs, warmup, e2e_words, hour_seconds,
         idle_seconds, snr_db, noise, seed, broker, daemon_command, pitch_method, with_oh, max_p99_ms, max_e2e_p95_ms, max_e2e_p50_ms,
         out_dir, stem, docs, readme) -> None:
    """Benchmarks of issue 4: inference latency, end to end through the daemon and Mosquitto, throughput
    and footprint, PocketSphinx side by side, and the accuracy suite. Writes
    OUT_DIR/<host>-<date>.{json,md} plus PNGs and exits 1 when a gated target is missed (or a section
    could not run), 0 otherwise; 65/66 when the model or the audio folder cannot be used.
    """
    from digitspot.benchmarks.report import Thresholds, evaluate_targets, render_docs, verdict, write_report
    from digitspot.edge.classifier import default_model_path
    from digitspot.edge.errors import EXIT_NOINPUT, DigitspotError

    started = time.monotonic()
    cpu_at_start = cpu_times()
    if daemon_command:
        from digitspot.benchmarks import daemon as daemon_module

        daemon_module.daemon_prefix[:] = shlex.split(daemon_command)
    model = Path(model) if model else default_model_path()
    fp32_model = fp32_model or _sibling(model, "digitspot-fp32.onnx")
    torchscript = torchscript or _sibling(model, "digitspot.pt")
    data_dir = data_dir or _default_data_dir()
    sections = [s for s in SECTIONS if not only or s in only]
    counts = {
        "runs": runs or (200 if short else 2000),
        "warmup": warmup if warmup is not None else (20 if short else 200),
        "e2e_words": e2e_words or (20 if short else None),
        "hour_seconds": hour_seconds or (60.0 if short else 3600.0),
        "idle_seconds": idle_seconds or (8.0 if short else 120.0),
        "per_digit": 3 if short else None,
    }
    now = dt.datetime.now(dt.UTC)
    machine = machine_info()
    stem = stem or f"{machine['host']}-{now.date().isoformat()}"
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "short" if short else "full", "command": shlex.join(["python", "-m", "digitspot.benchmarks", *sys.argv[1:]]),
        "machine": machine, "counts": counts, "sections": sections, "errors": {}, "figures": {},
        "settings": {"snr_db": snr_db, "noise": noise, "seed": seed, "data_dir": str(data_dir),
                     "pitch_method": pitch_method,
                     "broker": broker or "private Mosquitto on a free loopback port",
                     "daemon_command": daemon_command or "python -m digitspot.edge run"},
    }
    try:
        from digitspot.edge.card import load_card

        card = load_card(model, verify=True)
        report["model"] = {"path": str(model), "name": card.name, "sha256": card.sha256,
                           "file_size_bytes": card.file_size_bytes, "quantization": card.quantization.scheme,
                           "metrics_in_card": card.metrics}
    except DigitspotError as exc:  # nothing can run without the model: one line, edge's exit code (65/66)
        click.echo(f"benchmarks: error: cannot use model {model}: {exc}", err=True)
        sys.exit(exc.exit_code)
    from digitspot.benchmarks import plots
    from digitspot.benchmarks.audio import build_stream, labelled_files, load_labelled, noise_only_stream

    try:
        files = labelled_files(data_dir, counts["per_digit"])
    except FileNotFoundError as exc:
        click.echo(f"benchmarks: error: {exc}", err=True)
        sys.exit(EXIT_NOINPUT)
    rate = card.sample_rate
    clips = load_labelled(files, rate)
    digits = [f.digit for f in files]
    log(f"{len(files)} labelled files from {data_dir}; model {model.name}; sections {', '.join(sections)}")

    def section(name: str, fn):
        log(f"-- {name}")
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001  one broken section must not lose the others' results
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} failed: {exc}\n{traceback.format_exc()}")
            return None

    def fig(key: str) -> str:
        return f"{stem}-{key}.png"

    out_dir.mkdir(parents=True, exist_ok=True)

    if "inference" in sections:
        from digitspot.benchmarks.inference import run_inference

        def _inference():
            res = run_inference({"int8": model, "fp32": fp32_model}, clips[:64] if len(clips) > 64 else clips,
                                runs=counts["runs"], warmup=counts["warmup"], torchscript=torchscript)
            series = {k: v["samples_ms"] for k, v in res["runtimes"].items() if "samples_ms" in v}
            target = Thresholds().x86_inference_p99_ms if is_x86_64() else max_p99_ms
            if plots.latency_figure(out_dir / fig("inference"), series, "Inference, 1-s window",
                                    target_ms=target):
                res["figure"] = fig("inference")
            return res
        report["inference"] = section("inference", _inference)

    if "accuracy" in sections:
        from digitspot.benchmarks.accuracy import run_accuracy

        def _accuracy():
            res = run_accuracy(files, model, rate, seed=seed, pitch_method=pitch_method)
            if plots.confusion_figure(out_dir / fig("confusion"), res["conditions"]["official"]["confusion"],
                                      f"{card.name}: FSDD official test takes"):
                res["confusion_figure"] = fig("confusion")
            if plots.accuracy_figure(out_dir / fig("accuracy"), res["conditions"]):
                res["figure"] = fig("accuracy")
            return res
        report["accuracy"] = section("accuracy", _accuracy)

    stream = None
    if {"e2e", "peer"} & set(sections):
        n_words = counts["e2e_words"]
        pick = list(range(len(clips)))
        if n_words and n_words < len(clips):
            # spread over digits and speakers: every k-th file of the sorted list
            step = len(clips) / n_words
            pick = [int(i * step) for i in range(n_words)]
        stream = build_stream([clips[i] for i in pick], [digits[i] for i in pick],
                              [files[i].path.name for i in pick], rate, snr_db=snr_db, noise=noise, seed=seed)

    if "peer" in sections:
        def _peer():
            try:
                import pocketsphinx  # noqa: F401
            except ImportError:
                return {"skipped": "pocketsphinx is not installed (pip install pocketsphinx; it is in the dev extra)"}
            from digitspot.benchmarks.peer import __doc__ as method
            from digitspot.benchmarks.peer import run_peer_stream, run_peer_utterances
            from digitspot.edge.classifier import OnnxDigitClassifier

            classifier = OnnxDigitClassifier(model, threads=1)
            res = {"method": " ".join(method.split("\n\n", 1)[1].split()), "with_oh": with_oh,
                   "utterances": run_peer_utterances(clips, digits, rate, classifier, with_oh=with_oh)}
            res["stream"] = run_peer_stream(stream, with_oh=with_oh)
            return res
        report["peer"] = section("peer", _peer)

    broker_ctx = None
    host, port = None, None
    if {"e2e", "throughput"} & set(sections):
        if broker:
            host, _, port_text = broker.rpartition(":")
            host, port = host or "127.0.0.1", int(port_text)
        else:
            def _broker():
                from digitspot.edge.devtools.local_broker import LocalBroker

                return LocalBroker().start()
            broker_ctx = section("broker", _broker)
            if broker_ctx is not None:
                host, port = broker_ctx.host, broker_ctx.port
                log(f"private Mosquitto on {host}:{port}")

    try:
        if "e2e" in sections and port:
            from digitspot.benchmarks.e2e import run_e2e

            def _e2e():
                res = run_e2e(stream, model, host, port)
                latencies = [w["latency_ms"] for w in res["per_word"] if w["latency_ms"] is not None]
                if plots.latency_figure(out_dir / fig("e2e"), {"end of speech -> subscriber": latencies},
                                        "End to end", target_ms=max_e2e_p95_ms):
                    res["figure"] = fig("e2e")
                return res
            report["e2e"] = section("e2e", _e2e)
            if report.get("peer") and report["e2e"] and "stream" in report["peer"]:
                report["peer"]["ours_stream"] = {"counts": report["e2e"]["outcomes"],
                                                 "accuracy": report["e2e"]["accuracy"]}
        if "throughput" in sections and port:
            from digitspot.benchmarks.e2e import run_idle_cpu, run_startup, run_unpaced

            thr: dict[str, Any] = {}
            hour = build_stream(clips, digits, [f.path.name for f in files], rate, snr_db=snr_db, noise=noise,
                                seed=seed + 1, repeat_to_s=counts["hour_seconds"])
            thr["speech_hour"] = section("throughput speech", lambda: {
                **run_unpaced(hour, model, host, port, label="speech+noise"), "audio": hour.description})
            del hour
            quiet = noise_only_stream(counts["hour_seconds"], rate, noise=noise, snr_db=snr_db, seed=seed + 2)
            thr["noise_hour"] = section("throughput noise", lambda: {
                **run_unpaced(quiet, model, host, port, label="noise-only"), "audio": quiet.description})
            del quiet
            thr["startup"] = section("startup", lambda: run_startup(model, host, port, rate))
            idle_audio = noise_only_stream(counts["idle_seconds"] + 3.0, rate, noise=noise, snr_db=snr_db,
                                           seed=seed + 3, bursts_per_minute=0)
            thr["idle"] = section("idle cpu", lambda: run_idle_cpu(idle_audio, model, host, port))
            report["throughput"] = thr
    finally:
        if broker_ctx is not None:
            broker_ctx.close()

    if {"e2e", "throughput"} & set(sections) and not port:
        report["errors"].setdefault("broker", "no MQTT broker: end-to-end and throughput not measured")

    for key, section_name, field in (("inference", "inference", "figure"), ("e2e", "e2e", "figure"),
                                     ("confusion", "accuracy", "confusion_figure"),
                                     ("accuracy", "accuracy", "figure")):
        name = (report.get(section_name) or {}).get(field)
        if name:
            report["figures"][key] = name
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["machine_busy"] = machine_busy(cpu_at_start, cpu_times())
    report["wall_s"] = time.monotonic() - started
    report["caveats"] = caveats(report)
    thresholds = Thresholds(inference_p99_ms=max_p99_ms, e2e_p95_ms=max_e2e_p95_ms, e2e_p50_ms=max_e2e_p50_ms)
    report["thresholds"] = thresholds.__dict__
    report["targets"] = evaluate_targets(report, thresholds, is_x86_64())
    if only:
        # targets of sections that were not asked for are not misses
        for row in report["targets"]:
            if row["measured"] is None and not row["skipped"]:
                row["gated"] = False
    report["passed"] = verdict(report["targets"], report["errors"])
    json_path, md_path = write_report(report, out_dir, stem)
    if docs:
        from digitspot.edge.card import write_bytes_atomic

        write_bytes_atomic(docs, render_docs(report, md_path.name).encode("utf-8"))
        docs.chmod(0o644)
    if readme:
        update_readme(readme, render_docs(report, md_path.name))
    from digitspot.benchmarks.report import targets_table

    click.echo("\n".join(targets_table(report["targets"])))
    click.echo(f"\nreport: {json_path} and {md_path} ({report['wall_s']:.0f} s)")
    if not report["passed"]:
        missed = [r["id"] for r in report["targets"] if r["gated"] and r["passed"] is not True]
        click.echo(f"FAIL: {', '.join(missed) or 'errors'}"
                   + (f"; errors in {', '.join(report['errors'])}" if report["errors"] else ""), err=True)
        sys.exit(1)
    click.echo("PASS: every gated target met")


def caveats(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    out = [
        (f"Shared machine: {m['logical_cores']} logical cores, load average {m['loadavg_at_start']} at start and "
         f"{report.get('loadavg_at_end')} at the end; over the run all CPUs together were "
         f"{(report.get('machine_busy') or {}).get('busy_percent', '?')}% busy (steal "
         f"{(report.get('machine_busy') or {}).get('steal_percent', '?')}%), this benchmark and its daemons "
         "included, other people's jobs too. Tails (p99, max) are the most sensitive to that; medians much "
         "less. Re-run on an idle machine before quoting a tail."),
        "CPU frequency scaling and turbo are not controlled; a VM's vCPU may be time-sliced.",
        ("Inference latency is the onnxruntime call for one already-windowed 1-s input (the daemon's "
        "OnnxDigitClassifier.logits); windowing and softmax add microseconds."),
        ("End-to-end stamps are taken in Python on both sides (feeder after write(), subscriber in paho's "
        "on_message), so each includes tens of microseconds of interpreter time; the feeder's own lateness "
        "against its schedule is reported."),
        ("Throughput and false triggers per hour use `--source file` without `--realtime` (as fast as the "
        "daemon runs), which assumes its decisions depend on the samples, not on wall-clock time; the "
        "real-time stream's gaps and the real-time idle window give independent real-time counts."),
        ("Pitch shifts: " + {"wsola": "WSOLA time-stretch then soxr resampling (duration kept; formants move "
                                       "with the pitch). The training report uses audiomentations' "
                                       "PitchShift: same idea, different algorithm, so small differences "
                                       "are expected.",
                             "resample": "soxr resampling only (pitch, formants and tempo change together); "
                                         "the training report's duration-preserving shift gives different "
                                         "numbers."}[report["settings"]["pitch_method"]]),
    ]
    if report["mode"] == "short":
        out.insert(0, "SHORT MODE: small counts; every figure is indicative only and the pass/fail verdict "
                      "is not a measurement of the targets.")
    if not report["machine"]["versions"].get("torch"):
        out.append("torch is not installed: TorchScript and eager latency were skipped.")
    return out


README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(readme: Path, docs_page: str) -> None:
    """Replace the README's headline table (between the bench markers) so it always shows the latest run.

    The page is written for ``docs/``; in the README its heading is dropped and ``../`` links lose the prefix.
    """
    from digitspot.edge.card import write_bytes_atomic

    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise click.ClickException(f"{readme} has no {README_START} ... {README_END} markers; add them where the table goes")
    body = "\n".join(line for line in docs_page.splitlines() if not line.startswith("# ")).strip()
    body = body.replace("](../", "](")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    write_bytes_atomic(readme, f"{head}{README_START}\n{body}\n{README_END}{tail}".encode())
    readme.chmod(0o644)

"""``digitspot-train``: the workstation pipeline, one subcommand per stage.

``all`` runs data -> synth -> fit -> distill -> prune -> export -> quantize -> evaluate; ``make train`` calls it.
Errors are one line on stderr with the exit codes of ``digitspot.edge.errors`` (65 bad data, 66 missing input).
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click

from digitspot.edge import __version__
from digitspot.edge.errors import EXIT_MISSING_EXTRA, EXIT_SOFTWARE, DigitspotError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}


def fail(message: str, code: int) -> None:
    click.echo(f"digitspot-train: error: {message}", err=True)
    sys.exit(code)


def common_options(fn):
    """Options every stage shares, so each can run on its own against the same run directory."""
    options = [
        click.option("--data-dir", envvar="FSDD_DIR", type=click.Path(path_type=Path), default=None,
                     help="FSDD recordings directory  [default: $FSDD_DIR]"),
        click.option("--split", default="official", help="'official' (takes 0-4 test) or 'speaker:<name>'"),
        click.option("--run-dir", type=click.Path(path_type=Path), default=None,
                     help="checkpoints and stage configs  [default: runs/<preset>-<split>]"),
        click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("artifacts"),
                     help="where exported models, cards and the report go"),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("cache"),
                     help="synthetic voice cache"),
        click.option("--quick", is_flag=True, help="tiny data and one short pass per stage (tests, ~1-2 min)"),
        click.option("--preset", type=click.Choice(["full", "loso", "quick"]), default=None,
                     help="recipe preset  [default: full, or quick with --quick]"),
        click.option("--synth/--no-synth", "use_synth", default=True, help="add espeak-ng/flite voices"),
        click.option("--seed", default=0, help="random seed of the whole recipe"),
        click.option("--threads", default=2, help="torch CPU threads"),
        click.option("--progress/--no-progress", default=True, help="progress bars on stderr"),
    ]
    for option in reversed(options):
        fn = option(fn)

    @functools.wraps(fn)
    def wrapper(data_dir, split, run_dir, out_dir, cache_dir, quick, preset, use_synth, seed, threads, progress,
                **kwargs):
        import torch

        from digitspot.train.recipe import preset as make_preset
        from digitspot.train.workspace import Workspace

        torch.set_num_threads(max(1, threads))
        name = preset or ("quick" if quick else "full")
        recipe = make_preset(name, split=split, seed=seed)
        recipe.use_synth = use_synth
        if run_dir is None:
            run_dir = Path("runs") / f"{name}-{split.replace(':', '-')}"
        ws = Workspace(recipe=recipe, run_dir=run_dir, out_dir=out_dir,
                       data_dir=str(data_dir) if data_dir else None, cache_dir=cache_dir, progress=progress)
        try:
            return fn(ws, **kwargs)
        except DigitspotError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted; outputs already written are complete (writes are atomic)", 130)

    return wrapper


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="digitspot-train")
def main() -> None:
    """Train, compress, export and evaluate the digitspot spoken-digit model (workstation side).

    Stages, in order: data, synth, fit (teacher), distill (student), prune, export, quantize, evaluate.
    `all` runs them all; `loso` reruns the recipe once per held-out speaker.
    """
    require_training_extra()


def require_training_extra() -> None:
    """Stop with one line when torch is missing: the base install (the Pi's) has no training side."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        fail("the training side needs the `train` extra: pip install 'digitspot[train]' "
             "(torch 2.13.0, CPU build)", EXIT_MISSING_EXTRA)


@main.command()
@common_options
def data(ws) -> None:
    """Check the FSDD directory and write the split (data.json in the run directory)."""
    from digitspot.train.stages import stage_data

    split = stage_data(ws)
    click.echo(split.summary())


@main.command()
@common_options
def synth(ws) -> None:
    """Generate (or reuse from the cache) the synthetic espeak-ng/flite voices."""
    from digitspot.train.stages import stage_synth

    clips = stage_synth(ws)
    click.echo(f"{len(clips)} synthetic clips")


@main.command()
@common_options
def fit(ws) -> None:
    """Train the teacher CNN (teacher.pt)."""
    from digitspot.train.stages import stage_fit

    click.echo(stage_fit(ws))


@main.command()
@common_options
def distill(ws) -> None:
    """Distil the teacher into the DS-CNN student (student.pt)."""
    from digitspot.train.stages import stage_distill

    click.echo(stage_distill(ws))


@main.command()
@common_options
def prune(ws) -> None:
    """Iterative global magnitude pruning to 40% with fine-tuning (pruned.pt)."""
    from digitspot.train.stages import stage_prune

    click.echo(stage_prune(ws))


@main.command()
@common_options
def export(ws) -> None:
    """Export the pruned student: FP32 ONNX + card, TorchScript; check parity with PyTorch."""
    from digitspot.train.export import stage_export

    r = stage_export(ws)
    click.echo(f"{r['fp32_onnx']} ({r['fp32_bytes']} bytes), parity {r['parity_onnx_fp32_vs_torch_max_abs']:.2e}")


@main.command()
@common_options
def quantize(ws) -> None:
    """Static INT8 (QDQ, per-channel, Conv/Gemm) of the FP32 ONNX, calibrated on training audio."""
    from digitspot.train.export import stage_quantize

    r = stage_quantize(ws)
    click.echo(f"{r['int8_onnx']} ({r['int8_bytes']} bytes), top-1 agreement with FP32 "
               f"{r['int8_vs_fp32_top1_agreement']:.4f}")


@main.command()
@common_options
@click.option("--loso-results", type=click.Path(path_type=Path), default=Path("runs/loso/loso.json"),
              help="loso.json to include in the report (skipped if absent)")
def evaluate(ws, loso_results) -> None:
    """Run the exported models through the edge classifier; write report.md and the metrics into the cards."""
    from digitspot.train.evaluate import stage_evaluate

    m = stage_evaluate(ws, loso_results=loso_results)
    _print_metrics(m)


def _print_metrics(m: dict) -> None:
    for k, v in m.items():
        if isinstance(v, float):
            click.echo(f"{k}: {v:.4f}")


@main.command(name="all")
@common_options
@click.option("--loso-results", type=click.Path(path_type=Path), default=Path("runs/loso/loso.json"),
              help="loso.json to include in the report (skipped if absent)")
def all_stages(ws, loso_results) -> None:
    """The whole recipe: data, synth, fit, distill, prune, export, quantize, evaluate."""
    from digitspot.edge.atomic_write import write_json_atomic
    from digitspot.edge.card import load_card, write_card
    from digitspot.train.evaluate import stage_evaluate
    from digitspot.train.export import stage_export, stage_quantize
    from digitspot.train.report import append_timings
    from digitspot.train.stages import stage_data, stage_distill, stage_fit, stage_prune, stage_synth
    from digitspot.train.workspace import SHIPPED_NAME

    start = time.monotonic()
    timings = {}
    ws.path("all.json").unlink(missing_ok=True)  # the report must not show a previous run's timings
    for name, stage in (("data", stage_data), ("synth", stage_synth), ("fit", stage_fit),
                        ("distill", stage_distill), ("prune", stage_prune), ("export", stage_export),
                        ("quantize", stage_quantize)):
        t = time.monotonic()
        stage(ws)
        timings[name] = round(time.monotonic() - t, 1)
        click.echo(f"stage {name}: {timings[name]:.0f} s", err=True)
    t = time.monotonic()
    m = stage_evaluate(ws, loso_results=loso_results)
    timings["evaluate"] = round(time.monotonic() - t, 1)
    timings["total"] = round(time.monotonic() - start, 1)
    # Record how long the recipe took in the shipped cards (model files unchanged: same sha256).
    for path in (ws.artifact(f"{SHIPPED_NAME}.onnx"), ws.artifact(f"{SHIPPED_NAME}-fp32.onnx")):
        card = load_card(path)
        card.training = {**card.training, "stage_seconds": timings, "produced_by": "digitspot-train all"
                         + (" --quick" if ws.recipe.preset == "quick" else "")}
        write_card(path, card)
    write_json_atomic(ws.path("all.json"), {"stage_seconds": timings, "recipe": ws.recipe.to_dict()})
    append_timings(ws, timings)
    _print_metrics(m)
    click.echo(f"total: {timings['total']:.0f} s")


@main.command()
@common_options
@click.option("--speakers", default="", help="comma-separated speakers to hold out  [default: all six]")
@click.option("--jobs", default=1, type=click.IntRange(1, 6),
              help="folds run at once, each in its own process using --threads torch threads "
                   "(2 on a 2-core machine with --threads 1)")
def loso(ws, speakers, jobs) -> None:
    """Leave-one-speaker-out: rerun the recipe once per held-out speaker (writes <run-dir>/loso.json)."""
    import torch

    from digitspot.train.loso import stage_loso

    chosen = [s.strip() for s in speakers.split(",") if s.strip()] or None
    r = stage_loso(ws, chosen, jobs=jobs, threads=torch.get_num_threads())
    for f in r["folds"]:
        click.echo(f"{f['speaker']}: INT8 {f['accuracy_int8']:.4f} FP32 {f['accuracy_fp32']:.4f} ({f['seconds']:.0f} s)")
    click.echo(f"mean INT8 {r['mean_accuracy_int8']:.4f} over {len(r['folds'])} folds ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    try:
        main()
    except DigitspotError as exc:  # pragma: no cover
        fail(str(exc), getattr(exc, "exit_code", EXIT_SOFTWARE))

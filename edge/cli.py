"""``digitspot-edge``: the one command line of the Pi side.

Subcommands are added by their own modules (``classify`` here, ``run`` and ``devices`` by the daemon).
Errors are reported as one line on stderr with the exit codes listed in ``digitspot.edge.errors`` and the README.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from digitspot.edge import __version__
from digitspot.edge.cli_common import CONTEXT_SETTINGS, fail
from digitspot.edge.errors import EXIT_OK, AudioError, DigitspotError
from digitspot.edge.run_command import devices, run

# The longest file `classify` reads: it names the one digit in a clip, and a digit lasts under 2 s; a
# recording is `run --source file`'s job. Bounds the memory a file that claims hours can cost.
CLASSIFY_MAX_SECONDS = 60


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="digitspot-edge")
def main() -> None:
    """Spoken-digit sensor for a Raspberry Pi.

    Hear a digit, publish it over MQTT. `classify` labels audio files; `run` is the daemon.
    Exit codes: 0 ok, 2 bad usage, 65 unusable model or audio (or no speech), 66 missing input,
    69 device or broker unavailable (or digits not delivered), 78 configuration error.
    """


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None, envvar="DIGITSPOT_MODEL",
              help="Exported .onnx model with its .onnx.json card beside it  [default: the shipped artifact]")
@click.option("--threads", default=1, show_default=True, help="onnxruntime threads")
def classify(files: tuple[Path, ...], model_path: Path | None, threads: int) -> None:
    """Print the spoken digit in each audio FILE as one JSON line: path, digit, confidence.

    Reads WAV, FLAC or OGG at any sample rate (stereo is mixed down), up to 60 s per file, from files
    or pipes. A file that cannot be read or holds no speech gets a JSON line with an "error" key
    instead, the others are still classified, and the exit code is that of the first failure
    (65 not audio, empty, too long or no speech; 66 missing).
    """
    from digitspot.edge.classifier import OnnxDigitClassifier

    try:
        classifier = OnnxDigitClassifier(model_path, threads=threads)
    except DigitspotError as exc:
        fail(exc)
    exit_code = EXIT_OK
    show_progress = len(files) > 20 and sys.stderr.isatty()
    with click.progressbar(files, label="classifying", file=sys.stderr, hidden=not show_progress) as bar:
        for path in bar:
            try:
                prediction = classify_file(classifier, path)
            except DigitspotError as exc:
                click.echo(json.dumps({"path": str(path), "error": str(exc)}))
                click.echo(f"digitspot-edge: error: {exc}", err=True)
                exit_code = exit_code or exc.exit_code
                continue
            click.echo(json.dumps({
                "path": str(path),
                "digit": prediction.digit,
                "confidence": round(prediction.confidence, 4),
            }))
    sys.exit(exit_code)


def classify_file(classifier, path: Path):
    """The model's prediction for one file, or the DigitspotError that says why there is none."""
    from digitspot.edge.audio_io import load_audio, no_speech_reason

    try:
        samples = load_audio(path, classifier.sample_rate, max_seconds=CLASSIFY_MAX_SECONDS)
    except MemoryError as exc:  # reads are bounded, so this is a very small machine; the batch goes on
        raise AudioError(f"{path}: not enough memory to read it; split the file") from exc
    why = no_speech_reason(samples, classifier.sample_rate)
    if why is not None:
        raise AudioError(f"{path}: no speech: {why}")
    prediction = classifier.classify(samples)
    if not math.isfinite(prediction.confidence):
        raise AudioError(f"{path}: no speech: the model gives no score for this audio")
    return prediction


# `run` and `devices` live in their own module; it imports nothing from this one.
main.add_command(run)
main.add_command(devices)

if __name__ == "__main__":
    main()

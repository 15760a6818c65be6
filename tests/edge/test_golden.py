"""Golden values of the committed fixture model: exact digits, rounded probabilities and exact word
boundaries on named FSDD takes.

``tests/fixtures/fixture.onnx`` is deterministic (FP32, fixed weights) and so are the daemon's segmenter
(webrtcvad and energy rules on the samples) and the test stream (seeded), so these values are the same on
every run. A change in audio loading, windowing, the classifier or the segmenter shows up here as a
changed digit, probability or boundary, where a rate ("at least 95% right") would not notice it.

The fixture model is weak on purpose (295 of 300 official test takes): 8_george_4 is one of its misses,
heard as 6, and it stays in the golden set as a miss. After regenerating the fixture, print the new values
with ``.venv/bin/python tests/edge/test_golden.py`` and review them before pasting them here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURE_MODEL, run_cli
from streams import build_stream

from digitspot.edge.audio_io import load_audio
from digitspot.edge.classifier import OnnxDigitClassifier

TAKES = ["0_jackson_0", "1_nicolas_1", "2_theo_2", "3_george_3", "4_lucas_4", "5_yweweler_0", "6_jackson_1",
         "7_nicolas_2", "8_george_4", "9_theo_3"]

# `digitspot-edge classify`: take -> (digit, confidence as printed, 4 decimals)
CLASSIFY = {
    "0_jackson_0": (0, 0.9999), "1_nicolas_1": (1, 0.9971), "2_theo_2": (2, 0.6766), "3_george_3": (3, 0.981),
    "4_lucas_4": (4, 0.9867), "5_yweweler_0": (5, 0.9676), "6_jackson_1": (6, 0.5842),
    "7_nicolas_2": (7, 0.9902), "8_george_4": (6, 0.4731), "9_theo_3": (9, 0.9858),
}

# The classifier's three most probable digits per take, probabilities rounded to 3 decimals.
TOP3 = {
    "0_jackson_0": [(0, 1.0), (9, 0.0), (2, 0.0)],
    "1_nicolas_1": [(1, 0.997), (9, 0.003), (5, 0.0)],
    "2_theo_2": [(2, 0.677), (6, 0.168), (3, 0.13)],
    "3_george_3": [(3, 0.981), (2, 0.015), (8, 0.002)],
    "4_lucas_4": [(4, 0.987), (0, 0.008), (1, 0.003)],
    "5_yweweler_0": [(5, 0.968), (9, 0.019), (1, 0.006)],
    "6_jackson_1": [(6, 0.584), (7, 0.158), (8, 0.121)],
    "7_nicolas_2": [(7, 0.99), (8, 0.005), (5, 0.002)],
    "8_george_4": [(6, 0.473), (8, 0.468), (3, 0.058)],
    "9_theo_3": [(9, 0.986), (5, 0.007), (7, 0.006)],
}

# The ten takes in TAKES order as one stream (streams.build_stream, seed 7, white noise at -60 dBFS), through
# `digitspot-edge run --source file`: (digit, audio_start_ms, audio_end_ms, confidence to 2 decimals) per
# published word. Where the words really are, for comparison (ms): 0 1000-1643, 1 2768-3059, 2 4456-4983,
# 3 6258-6790, 4 7515-8069, 5 8869-9172, 6 10546-11189, 7 11694-12140, 8 13461-13968, 9 15265-15714.
# Early decisions end some words before their faint tails (2 at 4670 ms).
STREAM_SEED = 7
STREAM_ARGS = ["--min-confidence", "0.4", "--early-confidence", "0.75"]  # the fixture card's thresholds, pinned
SEGMENTS = [
    (0, 1000, 1640, 1.0), (1, 2770, 3060, 1.0), (2, 4460, 4670, 0.88), (3, 6260, 6790, 0.98),
    (4, 7690, 7990, 0.98), (5, 8920, 9140, 0.92), (6, 10560, 11080, 0.82), (7, 11690, 12140, 0.99),
    (6, 13460, 13970, 0.62), (9, 15280, 15660, 0.99),
]


def take_paths(fsdd_dir: Path) -> list[Path]:
    return [fsdd_dir / f"{name}.wav" for name in TAKES]


def top3(probabilities) -> list[tuple[int, float]]:
    p = np.asarray(probabilities, dtype=np.float64)
    return [(int(i), round(float(p[i]), 3)) for i in np.argsort(-p, kind="stable")[:3]]


def test_classify_cli_golden_digits_and_confidences(fsdd_dir):
    out = run_cli(["classify", "--model", str(FIXTURE_MODEL), *map(str, take_paths(fsdd_dir))])
    assert out.returncode == 0, out.stderr
    got = {Path(line["path"]).stem: (line["digit"], line["confidence"])
           for line in map(json.loads, out.stdout.decode().splitlines())}
    assert {k: d for k, (d, _) in got.items()} == {k: d for k, (d, _) in CLASSIFY.items()}
    for name, (_, confidence) in CLASSIFY.items():
        assert got[name][1] == pytest.approx(confidence, abs=2e-4), name  # one unit in the 4th decimal


def test_classifier_golden_probabilities(fsdd_dir):
    classifier = OnnxDigitClassifier(FIXTURE_MODEL, threads=1)
    for name, path in zip(TAKES, take_paths(fsdd_dir)):
        prediction = classifier.classify(load_audio(path, classifier.sample_rate))
        got = top3(prediction.probabilities)
        assert [d for d, _ in got] == [d for d, _ in TOP3[name]], (name, got)
        assert [p for _, p in got] == pytest.approx([p for _, p in TOP3[name]], abs=1e-3), (name, got)
        assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-5)


def golden_stream_events(fsdd_dir: Path, tmp_path: Path) -> list[dict]:
    wav = build_stream(take_paths(fsdd_dir), seed=STREAM_SEED, noise_dbfs=-60).write(tmp_path / "golden.wav")
    out = run_cli(["run", "--model", str(FIXTURE_MODEL), "--source", "file", "--input", str(wav), "--no-mqtt",
                   "--print", "--log-level", "warning", *STREAM_ARGS])
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def test_daemon_golden_segment_boundaries(fsdd_dir, tmp_path):
    events = golden_stream_events(fsdd_dir, tmp_path)
    got = [(e["digit"], e["audio_start_ms"], e["audio_end_ms"]) for e in events]
    assert got == [(d, start, end) for d, start, end, _ in SEGMENTS]
    assert [e["confidence"] for e in events] == pytest.approx([c for *_, c in SEGMENTS], abs=0.006)


if __name__ == "__main__":  # print the current values, to review after regenerating the fixture model
    import tempfile

    fsdd = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared/data/fsdd/recordings"
    clf = OnnxDigitClassifier(FIXTURE_MODEL, threads=1)
    for take, wav_path in zip(TAKES, take_paths(fsdd)):
        pred = clf.classify(load_audio(wav_path, clf.sample_rate))
        print(f"{take}: ({pred.digit}, {round(pred.confidence, 4)}), top3 {top3(pred.probabilities)}")
    with tempfile.TemporaryDirectory() as tmp:
        for e in golden_stream_events(fsdd, Path(tmp)):
            print((e["digit"], e["audio_start_ms"], e["audio_end_ms"], round(e["confidence"], 2)))

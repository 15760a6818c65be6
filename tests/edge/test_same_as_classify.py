"""The daemon classifies a word exactly as `digitspot-edge classify` does (same classifier, same window
fitting): on single FSDD takes both give the same digit, every time."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from helpers import run_cli

from digitspot.edge.audio_io import load_audio


def test_daemon_and_classify_agree(fsdd_test_files, fixture_model, tmp_path):
    files = fsdd_test_files[::15][:20]
    padded = []
    for f in files:  # each take alone in a file, with quiet around it as a microphone would hear it
        audio = load_audio(f, 8000)
        p = tmp_path / f.name
        sf.write(str(p), np.concatenate([np.zeros(3000, np.float32), audio, np.zeros(3000, np.float32)]), 8000)
        padded.append(p)
    out = run_cli(["classify", "--model", str(fixture_model), *map(str, files)])
    assert out.returncode == 0, out.stderr
    by_classify = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line)["digit"]
                   for line in out.stdout.decode().splitlines()}
    by_daemon = {}
    for p in padded:
        run = run_cli(["run", "--model", str(fixture_model), "--source", "file", "--input", str(p), "--no-mqtt",
                       "--print", "--min-confidence", "0"])
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.decode().splitlines()]
        assert len(events) == 1, (p.name, events)
        by_daemon[p.name] = events[0]["digit"]
    disagree = {name: (by_daemon[name], by_classify[name]) for name in by_daemon if by_daemon[name] != by_classify[name]}
    assert not disagree, f"daemon and classify disagree (daemon, classify): {disagree}"

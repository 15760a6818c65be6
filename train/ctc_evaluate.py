"""Streaming evaluation of an exported frame model on FSDD's official test takes, through the reference
decoder (``stream_decode_reference``): numpy and onnxruntime only.

- Isolated: each test take alone, 0.5 s of quiet before and after it; correct when exactly its digit is
  published.
- Strings: the strings benchmark's sets (``digitspot.train.fsdd_strings.evaluation_sets``: test takes cut to
  their speech, 3-6 of one speaker, exactly 0 / 50 / 100 / 200 ms from one digit's speech to the next);
  exact when the published digits are the string; substitutions, deletions and insertions per digit
  from the edit alignment.
- Delay: for every digit published in an exact result, the stream position when it was published minus
  the end of the digit's speech (``digitspot.edge.devtools.speech_trim.speech_bounds``).

"Quiet" is a -75 dBFS white noise floor, a microphone's self-noise; FSDD's own recordings carry theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitspot.edge.devtools.speech_trim import speech_bounds
from digitspot.train.fsdd_strings import SAMPLE_RATE, evaluation_sets, load_takes
from digitspot.train.stream_decode_reference import Emission, StreamSettings, stream_decode

QUIET_DBFS = -75.0
GAPS_MS = (0, 50, 100, 200)


@dataclass
class TestStream:
    audio: np.ndarray
    digits: list[int]
    ends: list[int]  # stream sample where each take's file ends
    name: str


def _quiet(n: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (QUIET_DBFS / 20)).astype(np.float32)


def join_takes(takes: list[tuple[np.ndarray, int]], gap_samples: int, rng: np.random.Generator, name: str,
               lead: int = 4000, tail: int = 4000) -> TestStream:
    parts, ends, pos = [_quiet(lead, rng)], [], lead
    for i, (audio, _) in enumerate(takes):
        if i:
            parts.append(_quiet(gap_samples, rng))
            pos += gap_samples
        parts.append(audio.astype(np.float32) + _quiet(len(audio), rng))
        pos += len(audio)
        ends.append(pos)
    parts.append(_quiet(tail, rng))
    return TestStream(np.concatenate(parts), [d for _, d in takes], ends, name)


def _speech_end(audio: np.ndarray) -> int:
    return speech_bounds(audio, SAMPLE_RATE)[1]


def isolated_streams(test_takes: list[tuple[np.ndarray, int, str]], seed: int = 5) -> list[TestStream]:
    """Each take alone; its end is the end of its speech, not of its file."""
    rng = np.random.default_rng(seed)
    out = []
    for a, d, name in test_takes:
        s = join_takes([(a, d)], 0, rng, name)
        s.ends = [s.ends[0] - len(a) + _speech_end(a)]
        out.append(s)
    return out


def benchmark_string_streams(takes, seed: int = 17) -> dict[int, list[TestStream]]:
    """The strings benchmark's evaluation sets from FSDD takes (``FsddTake``), with the quiet floor added."""
    rng = np.random.default_rng(seed)
    sets = evaluation_sets(load_takes(takes), GAPS_MS)
    return {int(gap): [TestStream(s.samples + _quiet(len(s.samples), rng), list(s.digits), list(s.ends),
                                  "+".join(Path(p).stem for p in s.sources)) for s in strings]
            for gap, strings in sets.items()}


def edit_counts(ref: list[int], hyp: list[int]) -> dict:
    """Substitutions, deletions, insertions of the minimum-edit alignment of ``hyp`` to ``ref``."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=int)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    i, j, s, dl, ins = n, m, 0, 0, 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            s += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            dl, i = dl + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return {"sub": int(s), "del": int(dl), "ins": int(ins)}


CURVE_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)


def score_streams(model, streams: list[TestStream], settings: StreamSettings) -> dict:
    """Figures at ``settings.min_confidence`` and the exact rate at every threshold of ``CURVE_THRESHOLDS``:
    a digit run and its peak do not depend on the threshold, so the emissions at threshold t are those at
    0 whose confidence reaches t, and one pass through the model serves every threshold."""
    exact, delays, counts, n_digits, errors = 0, [], {"sub": 0, "del": 0, "ins": 0}, 0, []
    curve = dict.fromkeys(CURVE_THRESHOLDS, 0)
    open_settings = StreamSettings(**{**settings.to_dict(), "min_confidence": 0.0})
    for s in streams:
        all_emitted: list[Emission] = stream_decode(model, s.audio, open_settings)
        for t in CURVE_THRESHOLDS:
            curve[t] += [e.digit for e in all_emitted if e.confidence >= t] == s.digits
        emitted = [e for e in all_emitted if e.confidence >= settings.min_confidence]
        hyp = [e.digit for e in emitted]
        c = edit_counts(s.digits, hyp)
        for k in counts:
            counts[k] += c[k]
        n_digits += len(s.digits)
        if hyp == s.digits:
            exact += 1
            delays.extend((e.published_at - end) / settings.sample_rate * 1000 for e, end in zip(emitted, s.ends))
        elif len(errors) < 12:
            errors.append({"stream": s.name, "want": "".join(map(str, s.digits)), "got": "".join(map(str, hyp))})
    delays_arr = np.asarray(delays) if delays else np.asarray([np.nan])
    return {
        "streams": len(streams), "exact": exact / max(1, len(streams)),
        **{f"{k}_per_digit": v / max(1, n_digits) for k, v in counts.items()},
        "delay_ms_median": float(np.nanmedian(delays_arr)), "delay_ms_p90": float(np.nanpercentile(delays_arr, 90)),
        "delay_ms_p95": float(np.nanpercentile(delays_arr, 95)), "delay_ms_max": float(np.nanmax(delays_arr)),
        "exact_by_threshold": {str(t): v / max(1, len(streams)) for t, v in curve.items()},
        "examples_wrong": errors,
    }


def evaluate_model(model, test_takes: list[tuple[np.ndarray, int, str]], settings: StreamSettings,
                   string_sets: dict[int, list[TestStream]]) -> dict:
    """Isolated takes and the strings of ``string_sets`` at every gap of ``GAPS_MS``, each stream decoded
    as the daemon would."""
    out = {"isolated": score_streams(model, isolated_streams(test_takes), settings)}
    for gap in GAPS_MS:
        out[f"strings_gap_{gap}ms"] = score_streams(model, string_sets[gap], settings)
    return out


def bank_heldout_streams(bank, per_kind: int = 150, seed: int = 23) -> dict[str, list[TestStream]]:
    """The speech bank's held-out clips (texts or voices never trained on), each alone in quiet, grouped:
    ``digit`` (single digits and "oh"), ``string`` (digit strings and digits inside sentences, said as one
    phrase) and ``talk`` (words, confusables and sentences without digits; homophones of digits such as
    "won" are left out: their audio is a digit). At most ``per_kind`` clips a group, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[dict]] = {"digit": [], "string": [], "talk": []}
    for r in bank.select(split="heldout", homophones=False):
        digits = [lab for lab in r["labels"] if lab >= 0]
        group = "digit" if r["kind"] in ("digit", "oh") else "string" if digits else "talk"
        groups[group].append(r)
    out = {}
    for group, records in groups.items():
        picked = [records[i] for i in sorted(rng.permutation(len(records))[:per_kind])]
        streams = []
        for r in picked:
            audio = bank.audio(r)
            digits = [lab for lab in r["labels"] if lab >= 0]
            s = join_takes([(audio, 0)], 0, rng, f"{r['voice']}:{r['english']}")
            s.digits = digits
            streams.append(s)
        out[group] = streams
    return out


def score_talk(model, streams: list[TestStream], settings: StreamSettings) -> dict:
    """Digits published on speech that holds none: per clip and per hour of talk, at every curve threshold."""
    counts = dict.fromkeys(CURVE_THRESHOLDS, 0)
    clips_with_digit = dict.fromkeys(CURVE_THRESHOLDS, 0)
    open_settings = StreamSettings(**{**settings.to_dict(), "min_confidence": 0.0})
    seconds = 0.0
    for s in streams:
        emitted = stream_decode(model, s.audio, open_settings)
        seconds += len(s.audio) / settings.sample_rate
        for t in CURVE_THRESHOLDS:
            n = sum(e.confidence >= t for e in emitted)
            counts[t] += n
            clips_with_digit[t] += n > 0
    hours = seconds / 3600
    return {"clips": len(streams), "seconds": round(seconds, 1),
            "false_digits_per_hour": {str(t): counts[t] / hours for t in CURVE_THRESHOLDS},
            "clips_with_a_digit": {str(t): clips_with_digit[t] / max(1, len(streams)) for t in CURVE_THRESHOLDS}}


def evaluate_bank(model, streams: dict[str, list[TestStream]], settings: StreamSettings) -> dict:
    return {"digit": score_streams(model, streams["digit"], settings),
            "string": score_streams(model, streams["string"], settings),
            "talk": score_talk(model, streams["talk"], settings)}


def main(argv: list[str] | None = None) -> int:
    """Evaluate exported frame models: ``python -m digitspot.train.ctc_evaluate --card card_fields.json
    --out results.json model.onnx ...`` (FSDD from ``--data-dir`` or ``$FSDD_DIR``)."""
    import argparse
    import json
    import os

    from digitspot.train import data as fsdd
    from digitspot.train.stream_decode_reference import OnnxFrameModel

    ap = argparse.ArgumentParser(description="Streaming evaluation of frame models on FSDD's official test takes")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--card", required=True, help="JSON with the streaming card fields (frame_export)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=os.environ.get("FSDD_DIR"))
    ap.add_argument("--step-samples", type=int, default=None, help="override the card's step")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    card = json.loads(Path(args.card).read_text())
    settings = StreamSettings(window_samples=card["window_samples"],
                              step_samples=args.step_samples or card["step_samples"],
                              lookahead_samples=card["lookahead_samples"], frame_hop_samples=card["frame_hop_samples"],
                              frame_length_samples=card["frame_length_samples"],
                              min_confidence=card["thresholds"]["min_confidence"])
    split = fsdd.make_split(fsdd.scan_fsdd(args.data_dir), "official")
    test = fsdd.load_clips(split.test, progress=False)
    takes = [(a, int(d), Path(p).stem) for a, d, p in zip(test.clips, test.labels, test.sources)]
    sets = benchmark_string_streams(split.test)
    results = {"stream_settings": settings.to_dict(),
               "strings": "fsdd_strings.evaluation_sets"}
    for path in args.models:
        results[Path(path).name] = evaluate_model(OnnxFrameModel(path, threads=args.threads), takes, settings,
                                                  string_sets=sets)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

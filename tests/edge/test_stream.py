"""The streaming path for ctc-stream models: fixed-window model calls, greedy CTC digits, digit strings and
their Home Assistant discovery, on the deterministic fixture ``tests/fixtures/stream_fixture.onnx``.

The fixture hears a tone of ``tone_hz(d)`` Hz as digit ``d``, silence as blank and noise as filler (see
``tests/fixtures/make_stream_fixture.py``), and the test signals are pure arithmetic (sines and a
splitmix64 noise), so every frame, digit, boundary and string below is an exact golden value.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from digitspot.edge.ctc_decoder import DigitHit, GreedyCtcDecoder
from digitspot.edge.errors import ModelError
from digitspot.edge.events import DiscoveryConfig
from digitspot.edge.sequences import (
    CodeTriggerDiscovery,
    DigitString,
    SequenceDiscovery,
    SequenceEvent,
    SequenceGrouper,
    build_sequence_event,
    sequence_discovery_messages,
)
from digitspot.edge.stream_model import AudioClock, DecidedFrames, OnnxStreamModel, StreamSpec, frames_of

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
STREAM_MODEL = FIXTURES / "stream_fixture.onnx"
RATE = 8000


def _load_fixture_script():
    spec = importlib.util.spec_from_file_location("make_stream_fixture", FIXTURES / "make_stream_fixture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_script = _load_fixture_script()


# -- signals -----------------------------------------------------------------------------------------------

def tone(digit: int, n: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(n)
    return (amp * np.sin(2 * np.pi * fixture_script.tone_hz(digit) * t / RATE)).astype(np.float32)


def silence(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


def noise(n: int, seed: int, amp: float) -> np.ndarray:
    """Uniform noise in [-amp, amp) from splitmix64: the same bits on every platform and numpy version."""
    mask = (1 << 64) - 1
    i = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & mask)
    with np.errstate(over="ignore"):
        z = i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 2 - 1).astype(np.float32) * np.float32(amp)


def golden_stream() -> np.ndarray:
    """A code said at a natural pace, then noise, a doubtful digit, and a second code cut by the end.

    | samples       | what                                                  | heard as        |
    |---------------|-------------------------------------------------------|-----------------|
    | 0-2400        | silence                                               | blank           |
    | 2400-4403     | tone 4                                                | 4               |
    | 4403-5604     | silence (150 ms)                                      | blank           |
    | 5604-9604     | tone 2 then tone 7, no gap                            | 2, 7            |
    | 9604-10407    | silence (100 ms)                                      | blank           |
    | 10407-12404   | tone 7 again                                          | 7               |
    | 12404-14004   | noise                                                 | filler          |
    | 14004-27004   | silence (1.6 s): the string 4277 ends                 | blank           |
    | 27004-29004   | weak tone 5 under loud noise                          | 5 below 0.6     |
    | 29004-41004   | silence                                               | blank           |
    | 41004-43004   | tone 0                                                | 0               |
    | 43004-43404   | silence (50 ms)                                       | blank           |
    | 43404-44880   | tone 9, the stream ends inside its last frame         | 9 (at finish)   |
    """
    parts = [silence(2400), tone(4, 2003), silence(1201), tone(2, 1999), tone(7, 2001), silence(803),
             tone(7, 1997), noise(1600, 1, 0.1), silence(13000), tone(5, 2000, 0.1) + noise(2000, 2, 0.3),
             silence(12000), tone(0, 2000), silence(400), tone(9, 1476)]
    return np.concatenate(parts)


GOLDEN_LENGTH = 44880

# (digit, confidence to 4 decimals, start_sample, end_sample, peak_sample, decided_sample) per published digit
GOLDEN_HITS = [
    (4, 0.9993, 2320, 4480, 2560, 5600),
    (2, 0.9993, 5520, 7680, 5840, 8800),
    (7, 0.9993, 7600, 9680, 7840, 10400),
    (7, 0.9993, 10320, 12480, 10640, 13600),
    (0, 0.9993, 40880, 43120, 41200, 44000),
    (9, 0.9993, 43280, 44960, 43600, 45600),
]


@dataclass
class Run:
    """Everything one pass of a stream through model, decoder and grouper produced."""

    batches: list[DecidedFrames] = field(default_factory=list)
    hits: list[DigitHit] = field(default_factory=list)
    strings: list[DigitString] = field(default_factory=list)
    closed_at: list[int | None] = field(default_factory=list)  # decoder.decided_until when each string closed
    hits_before_finish: int = 0


def run_stream(model: OnnxStreamModel, audio: np.ndarray, chunk: int, min_confidence: float = 0.6,
               gap_ms: int = 1200, active: list[bool] | None = None) -> Run:
    """The daemon's loop, as the wiring is meant to be: push, decode each batch, add its digits, advance."""
    model.reset()
    decoder = GreedyCtcDecoder(model.labels, min_confidence)
    grouper = SequenceGrouper(RATE, gap_ms)
    run = Run()

    def consume(batches: list[DecidedFrames]) -> None:
        for batch in batches:
            run.batches.append(batch)
            for hit in decoder.push(batch):
                run.hits.append(hit)
                closed = grouper.add(hit, digit_seq=len(run.hits))
                run.strings += closed
                run.closed_at += [decoder.decided_until] * len(closed)
            closed = grouper.advance(decoder.decided_until, decoder.open_digit_start)
            run.strings += closed
            run.closed_at += [decoder.decided_until] * len(closed)

    for i, start in enumerate(range(0, len(audio), chunk)):
        consume(model.push(audio[start:start + chunk], active=True if active is None else active[i]))
    consume(model.flush())
    run.hits_before_finish = len(run.hits)
    hit = decoder.finish(run.batches[-1].decided_at if run.batches else None)
    if hit is not None:
        run.hits.append(hit)
        run.strings += grouper.add(hit, digit_seq=len(run.hits))
    run.strings += grouper.finish()
    run.closed_at += [None] * (len(run.strings) - len(run.closed_at))
    return run


def summary(hits: list[DigitHit]) -> list[tuple]:
    return [(h.digit, round(h.confidence, 4), h.start_sample, h.end_sample, h.peak_sample, h.decided_sample)
            for h in hits]


@pytest.fixture(scope="module")
def model() -> OnnxStreamModel:
    return OnnxStreamModel(STREAM_MODEL)


@pytest.fixture(scope="module")
def reference(model) -> Run:
    """The golden stream pushed one second at a time."""
    return run_stream(model, golden_stream(), 8000)


# -- the model's card and its window ------------------------------------------------------------------------

def test_the_card_gives_the_streaming_spec(model):
    assert model.spec == StreamSpec(labels=("blank", *map(str, range(10)), "filler"), frame_hop_samples=80,
                                    frame_length_samples=160, window_samples=8000, step_samples=800,
                                    lookahead_samples=400)
    # frames of a call that end in [8000 - 800 - 400, 8000 - 400) = [6800, 7600): j * 80 + 160 in that span
    assert model.spec.decided_window_frames() == range(83, 93)
    assert model.sample_rate == RATE
    assert (model.thresholds.min_confidence, model.card_sequence_gap_ms) == (0.6, 1200)


def test_every_frame_is_decided_exactly_once(reference):
    indices, posteriors = frames_of(reference.batches)
    # frame -1 ([-80, 80)) is the first to hold stream audio, frame 560 ([44800, 44960)) the last
    assert indices == list(range(-1, GOLDEN_LENGTH // 80))
    assert posteriors.shape == (len(indices), 12)
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, rtol=1e-5)
    for batch in reference.batches:
        np.testing.assert_array_equal(batch.start_samples, np.array(batch.indices) * 80)
        np.testing.assert_array_equal(batch.end_samples, np.array(batch.indices) * 80 + 160)


@pytest.mark.parametrize("chunk", [1, 80, 333, 8000])
def test_chunking_changes_nothing(model, reference, chunk):
    """However the audio arrives, the same windows reach the model: the same frames, bit for bit, and the
    same digits and strings."""
    got = run_stream(model, golden_stream(), chunk)
    want_indices, want_posteriors = frames_of(reference.batches)
    indices, posteriors = frames_of(got.batches)
    assert indices == want_indices
    np.testing.assert_array_equal(posteriors, want_posteriors)
    assert got.hits == reference.hits
    assert got.strings == reference.strings
    assert got.closed_at == reference.closed_at


def test_golden_digits(reference):
    """Connected tones (2 then 7, no gap) give both digits; a repeated 7 after 100 ms of silence is a
    second 7; noise (filler) and the doubtful 5 (peak posterior below 0.6) publish nothing; the 9 cut by
    the end of the stream is published by the decoder's finish."""
    assert summary(reference.hits) == GOLDEN_HITS
    assert reference.hits_before_finish == len(GOLDEN_HITS) - 1
    assert reference.hits[0].top3[0] == (4, reference.hits[0].confidence)
    assert [d for d, _ in reference.hits[0].top3[1:]] == [0, 1]


def test_the_doubtful_digit_is_there_below_the_threshold(model):
    """The weak 5 is decoded as 5 when the threshold allows it: what keeps it out is its confidence."""
    low = run_stream(model, golden_stream(), 8000, min_confidence=0.0)
    fives = [h for h in low.hits if h.digit == 5]
    assert fives and all(27004 - 160 <= h.start_sample and h.end_sample <= 29004 + 160 for h in fives)
    assert max(h.confidence for h in fives) < 0.6
    assert [h for h in low.hits if h.digit != 5] == [h for h in run_stream(model, golden_stream(), 8000).hits]


def test_golden_strings_and_when_they_close(reference):
    assert [s.digits for s in reference.strings] == ["4277", "09"]
    assert [list(s.digit_seqs) for s in reference.strings] == [[1, 2, 3, 4], [5, 6]]
    first = reference.strings[0]
    deadline = first.end_sample + 1200 * RATE // 1000  # 12480 + 9600
    # closed by the first batch whose decided frames reach the deadline: frames end every 80 samples and
    # batches hold 10 of them, so the batch ending at 22720 (frames ending 22000..22720) is the one
    assert reference.closed_at[0] == 22720 and 22720 - 800 < deadline <= 22720
    # the last string is still open when the stream ends: the end of the stream closes it
    assert reference.closed_at[1] is None


def test_each_call_sees_one_fixed_window(model):
    """Per-call cost is one window whatever the stream: every call gets [1, 8000] and decides at most
    step / hop = 10 frames; the calls are one per step until the last frame is decided."""
    shapes: list[tuple[int, ...]] = []
    session = model.session

    class Recorder:
        def run(self, outputs, feeds):
            shapes.append(next(iter(feeds.values())).shape)
            return session.run(outputs, feeds)

    model.session = Recorder()
    try:
        got = run_stream(model, golden_stream(), 333)
    finally:
        model.session = session
    assert set(shapes) == {(1, 8000)}
    # the last frame (560) ends at 44960; the call deciding it runs at the first step p with p - 400 > 44960
    assert len(shapes) == 57 == 45600 // 800
    # the first call decides frames ending in [-400, 400) that hold audio (-1..2), the last one 553..560
    assert [len(b) for b in got.batches] == [4] + [10] * 55 + [8]
    assert got.batches[-1].decided_at == 45600


def test_the_stream_starts_on_silence(model):
    """Before the stream there are zeros: a tone from sample 0 is decided from frame -1 ([-80, 80)) on."""
    got = run_stream(model, np.concatenate([tone(3, 1600), silence(1600)]), 800)
    assert got.batches[0].first_index == -1
    assert summary(got.hits) == [(3, 0.9993, -80, 1680, 160, 2400)]


def test_flush_decides_the_rest_and_finish_ends_the_last_run(model):
    model.reset()
    audio = tone(6, 1600)  # ends on a frame boundary: its last frame [1520, 1680) is half tone, still a 6
    decoder = GreedyCtcDecoder(model.labels, 0.6)
    hits = [h for b in model.push(audio) for h in decoder.push(b)]
    tail = model.flush()
    hits += [h for b in tail for h in decoder.push(b)]
    assert hits == []
    assert tail and tail[-1].indices[-1] == 1600 // 80 - 1 == 19
    last = decoder.finish(tail[-1].decided_at)
    assert last is not None and (last.digit, last.start_sample, last.end_sample) == (6, -80, 1680)
    assert model.flush() == []
    with pytest.raises(RuntimeError, match="reset"):
        model.push(audio)
    model.reset()
    again = model.push(audio) + model.flush()
    assert frames_of(again)[0] == list(range(-1, 20))


def test_an_empty_stream_decides_nothing(model):
    model.reset()
    assert model.push(np.zeros(0, np.float32)) == []
    assert model.flush() == []


def test_inactive_windows_skip_the_model_and_decide_blank(model):
    """The caller's activity check only saves CPU: windows with no active audio are not run, their frames
    are blank, and the digits are those of the ungated run."""
    audio = np.concatenate([silence(24000), tone(1, 2000), silence(3000)])
    active = [i >= 30 for i in range(len(audio) // 800 + 1)]  # 800-sample chunks: silent for 3 s
    calls = model.calls
    gated = run_stream(model, audio, 800, active=active)
    assert model.skipped_calls > 0
    assert (gated.batches[0].skipped, gated.batches[29].skipped, gated.batches[30].skipped) == (True, True, False)
    assert sum(b.skipped for b in gated.batches) == 30
    assert model.calls - calls == len(gated.batches) - 30
    for b in gated.batches[:30]:
        assert (b.posteriors.argmax(axis=1) == 0).all()
    ungated = run_stream(model, audio, 800)
    assert gated.hits == ungated.hits and [h.digit for h in gated.hits] == [1]


def test_the_training_reference_decodes_the_same(model):
    """Skew guard: ``digitspot.train.stream_decode_reference`` (what the trainer measures) and the daemon's
    modules publish the same digits at the same frames and moments."""
    reference_decoder = pytest.importorskip("digitspot.train.stream_decode_reference")
    audio = golden_stream()[:41004 + 2000 + 4000]  # ends in silence, so both decide the same frames
    settings = reference_decoder.StreamSettings(window_samples=8000, step_samples=800, lookahead_samples=400,
                                                frame_hop_samples=80, frame_length_samples=160,
                                                min_confidence=0.6, sample_rate=RATE)

    def call(windows: np.ndarray) -> np.ndarray:
        return np.stack([model._run(w) for w in windows])

    want = reference_decoder.stream_decode(call, audio, settings)
    got = run_stream(model, audio, 8000).hits
    assert [(e.digit, e.frame_end, e.published_at) for e in want] == \
        [(h.digit, h.peak_sample, h.decided_sample) for h in got]
    np.testing.assert_allclose([e.confidence for e in want], [h.confidence for h in got], rtol=1e-6)


# -- the card's streaming fields ------------------------------------------------------------------------------

GOOD = {"labels": ["blank", *map(str, range(10)), "filler"], "frame_hop_samples": 160, "frame_length_samples": 336,
        "window_samples": 8000, "step_samples": 800, "lookahead_samples": 640}


@pytest.mark.parametrize(("change", "message"), [
    ({"step_samples": 840}, "not a multiple of frame_hop_samples"),
    ({"window_samples": 8080}, "window_samples 8080 is not a multiple"),
    ({"lookahead_samples": 7000}, "exceed window_samples"),
    ({"lookahead_samples": -1}, "negative"),
    ({"frame_hop_samples": 0}, "not positive"),
    ({"step_samples": 800.0}, "not a whole number"),
    ({"step_samples": True}, "not a whole number"),
    ({"labels": ["blank", *map(str, range(9)), "filler"]}, r"lack \['9'\]"),
    ({"labels": ["0", *map(str, range(10))]}, "repeat"),
    ({"labels": "blank 0 1"}, "not a list of strings"),
])
def test_bad_streaming_fields_are_refused(change, message):
    with pytest.raises(ModelError, match=message):
        StreamSpec.from_dict({**GOOD, **change})


def test_missing_streaming_fields_are_named():
    with pytest.raises(ModelError, match="no step_samples, lookahead_samples"):
        StreamSpec.from_dict({k: v for k, v in GOOD.items() if k not in {"step_samples", "lookahead_samples"}})


def test_the_spec_round_trips_and_ignores_other_card_keys():
    spec = StreamSpec.from_dict({**GOOD, "model_kind": "ctc-stream", "n_frames": 49, "name": "x"})
    assert StreamSpec.from_dict(spec.to_dict()) == spec
    # the training side's default serving settings: 5 frames per call, those ending in [6560, 7360)
    assert spec.decided_window_frames() == range(39, 44)


def test_a_window_classifier_is_not_a_stream_model():
    with pytest.raises(ModelError, match="'window-classifier' model, not a 'ctc-stream' one"):
        OnnxStreamModel(FIXTURES / "fixture.onnx")


def test_a_card_that_does_not_fit_its_model_is_refused(tmp_path):
    shutil.copy(STREAM_MODEL, tmp_path / "m.onnx")
    card = json.loads((FIXTURES / "stream_fixture.onnx.json").read_text())
    card["labels"] = [*card["labels"], "extra"]
    (tmp_path / "m.onnx.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"shape \[99, 12\]; the card promises >= 93 frames x 13 labels"):
        OnnxStreamModel(tmp_path / "m.onnx")


@pytest.mark.parametrize("gap", [0, -5, 1.5, "1200", True])
def test_a_bad_sequence_gap_in_the_card_is_refused(tmp_path, gap):
    shutil.copy(STREAM_MODEL, tmp_path / "m.onnx")
    card = json.loads((FIXTURES / "stream_fixture.onnx.json").read_text())
    card["thresholds"]["sequence_gap_ms"] = gap
    (tmp_path / "m.onnx.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sequence_gap_ms .* is not a positive whole number"):
        OnnxStreamModel(tmp_path / "m.onnx")


def test_the_committed_fixture_is_what_its_script_makes():
    pytest.importorskip("onnx")
    data = fixture_script.build_model().SerializeToString()
    assert data == STREAM_MODEL.read_bytes(), "run tests/fixtures/make_stream_fixture.py and commit its output"
    assert fixture_script.card(data) == json.loads((FIXTURES / "stream_fixture.onnx.json").read_text())


# -- the decoder on hand-made posteriors ----------------------------------------------------------------------

LABELS = ("blank", *map(str, range(10)), "filler")
B, F = 0, 11


def onehot_frames(labels: list[int], p: float = 0.9) -> list[np.ndarray]:
    frames = []
    for label in labels:
        row = np.full(12, (1 - p) / 11, np.float32)
        row[label] = p
        frames.append(row)
    return frames


def decode(frames: list[np.ndarray], min_confidence: float = 0.5) -> list[DigitHit]:
    decoder = GreedyCtcDecoder(LABELS, min_confidence)
    hits = [decoder.push_frame(row, 80 * i, 80 * i + 160, 80 * i + 800) for i, row in enumerate(frames)]
    return [h for h in [*hits, decoder.finish()] if h is not None]


def digit_label(d: int) -> int:
    return d + 1


@pytest.mark.parametrize(("labels", "digits"), [
    ([B, 5, 5, 5, B], [4]),  # label 5 is the digit 4
    ([B, 3, 8, B], [2, 7]),  # connected digits: the argmax changes straight from one digit to the next
    ([B, 8, 8, B, 8, B], [7, 7]),  # a repeated digit needs a blank between its runs ...
    ([B, 8, F, 8], [7, 7]),  # ... or a filler ...
    ([B, 8, 8, 8, 8], [7]),  # ... without one it is one digit
    ([F, F, B, F], []),  # blank and filler are never published
    ([1, 1, B, 1], [0, 0]),  # label "0" ("oh" too) is the digit 0
    ([], []),
])
def test_greedy_ctc_rules(labels, digits):
    assert [h.digit for h in decode(onehot_frames(labels))] == digits


def test_a_run_is_published_when_it_ends_with_its_peak():
    rows = onehot_frames([B, 5, 5, 5, B])
    rows[2] = onehot_frames([5], p=0.95)[0]
    rows[3] = onehot_frames([5], p=0.95)[0]
    decoder = GreedyCtcDecoder(LABELS, 0.5)
    out = [decoder.push_frame(row, 80 * i, 80 * i + 160, 80 * i + 800) for i, row in enumerate(rows[:4])]
    assert out == [None] * 4 and decoder.open_digit_start == 80
    hit = decoder.push_frame(rows[4], 320, 480, 1120)
    assert hit is not None
    # run = frames 1..3: [80, 400); the first of the two equal peaks (frame 2, ends at 320); decided by frame 4
    assert (hit.digit, round(hit.confidence, 4), hit.start_sample, hit.end_sample, hit.peak_sample,
            hit.decided_sample) == (4, 0.95, 80, 400, 320, 1120)
    assert decoder.open_digit_start is None


def test_confidence_is_the_peak_and_the_threshold_applies_to_it():
    assert [h.digit for h in decode(onehot_frames([B, 3, 3, B], p=0.55), min_confidence=0.6)] == []
    rows = onehot_frames([B, 3, 3, B], p=0.55)
    rows[2] = onehot_frames([3], p=0.65)[0]
    assert [(h.digit, round(h.confidence, 2)) for h in decode(rows, min_confidence=0.6)] == [(2, 0.65)]


def test_top3_ranks_the_digits_at_the_peak():
    row = np.zeros(12, np.float32)
    row[[B, digit_label(4), digit_label(9), digit_label(1), F]] = [0.05, 0.6, 0.2, 0.1, 0.05]
    (hit,) = decode([row])
    assert [(d, round(p, 2)) for d, p in hit.top3] == [(4, 0.6), (9, 0.2), (1, 0.1)]


def test_non_finite_posteriors_publish_nothing():
    row = np.full(12, np.nan, np.float32)
    assert decode([row, row]) == []


def test_a_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        GreedyCtcDecoder(LABELS, 1.5)


# -- strings ------------------------------------------------------------------------------------------------

def hit(digit: int, start: int, end: int) -> DigitHit:
    return DigitHit(digit, 0.9, start, end, end, end + 800)


def test_the_gap_decides_which_string_a_digit_joins():
    g = SequenceGrouper(RATE, gap_ms=1000)  # 8000 samples
    assert g.add(hit(1, 0, 160)) == []
    assert g.add(hit(2, 160 + 7999, 160 + 8159)) == []  # 1 sample short of the gap: same string
    (closed,) = g.add(hit(3, 8319 + 8000, 8319 + 8160))  # exactly the gap: a new string
    assert closed.digits == "12" and g.pending == "3"
    assert [s.digits for s in g.finish()] == ["3"] and g.finish() == []


def test_a_string_closes_when_the_decided_audio_passes_the_gap():
    g = SequenceGrouper(RATE, gap_ms=1000)
    g.add(hit(4, 1000, 1160), digit_seq=7)
    assert g.advance(9159) == []  # deadline 1160 + 8000 = 9160 not reached
    assert g.advance(9160, open_digit_start=9000) == []  # a digit run begun inside the gap may still join
    (closed,) = g.advance(9240, open_digit_start=9160)  # one begun at the deadline may not
    assert (closed.digits, closed.digit_seqs, closed.start_sample, closed.end_sample) == ("4", (7,), 1000, 1160)
    assert g.advance(20000) == [] and g.pending == ""


def test_a_very_long_string_is_cut():
    g = SequenceGrouper(RATE, gap_ms=1000, max_digits=3)
    closed = [s for i in range(7) for s in g.add(hit(i, 1000 * i, 1000 * i + 160))]
    assert [s.digits for s in closed] == ["012", "345"] and g.pending == "6"


@pytest.mark.parametrize(("gap_ms", "max_digits"), [(0, 32), (1200, 0)])
def test_bad_string_settings_are_refused(gap_ms, max_digits):
    with pytest.raises(ValueError):
        SequenceGrouper(RATE, gap_ms=gap_ms, max_digits=max_digits)


def test_the_sequence_event_payload(reference):
    clock = AudioClock(RATE)
    clock.advance(16000, 1_800_000_000.0)
    clock.advance(8000, 1_800_000_001.0)
    assert clock.wall_time(20000) == 1_800_000_000.5
    string = reference.strings[0]
    event = build_sequence_event(string, device_id="kitchen", boot_id="0123456789abcdef", seq=1, sample_rate=RATE,
                                 wall_time=clock.wall_time, gap_ms=1200, model_name="m", model_sha256="ab" * 32,
                                 published_at=1_800_000_001_200)
    assert json.loads(event.to_json()) == {
        "schema_version": 1, "device_id": "kitchen", "event_type": "sequence", "digits": "4277", "length": 4,
        "confidences": [0.9993] * 4, "digit_seqs": [1, 2, 3, 4],
        "speech_start": 1_799_999_998_290, "speech_end": 1_799_999_999_560, "published_at": 1_800_000_001_200,
        "audio_start_ms": 290, "audio_end_ms": 1560, "gap_ms": 1200, "seq": 1, "boot_id": "0123456789abcdef",
        "model": {"name": "m", "sha256": "ab" * 32},
    }
    back = SequenceEvent.from_dict(json.loads(event.to_json()))
    assert back.to_dict() == event.to_dict()


# -- Home Assistant discovery -------------------------------------------------------------------------------

COMMON = {"device_id": "kitchen", "device_name": "Kitchen digits", "prefix": "digitspot/kitchen",
          "sw_version": "0.1.0", "model_name": "digitspot"}


def test_the_sequence_event_entity_discovery():
    d = SequenceDiscovery(**COMMON)
    assert d.topic("homeassistant") == "homeassistant/event/kitchen/sequence/config"
    payload = json.loads(d.to_json())
    digit = DiscoveryConfig(**COMMON).to_dict()
    assert payload == {
        "name": "Spoken code", "unique_id": "digitspot_kitchen_sequence",
        "default_entity_id": "event.digitspot_kitchen_sequence", "object_id": "digitspot_kitchen_sequence",
        "state_topic": "digitspot/kitchen/sequence", "event_types": ["sequence"],
        "availability_topic": "digitspot/kitchen/status", "payload_available": "online",
        "payload_not_available": "offline", "icon": "mdi:dialpad", "qos": 1,
        "device": digit["device"], "origin": digit["origin"],
    }
    assert payload["device"]["identifiers"] == ["digitspot_kitchen"]  # the digit entity's device


def test_a_sequence_event_is_what_the_event_entity_accepts(reference):
    """Home Assistant's MQTT event entity pops ``event_type`` (which must be one of ``event_types``) and
    keeps the other keys as the event's attributes: the code arrives as the ``digits`` attribute."""
    event = build_sequence_event(reference.strings[0], device_id="kitchen", boot_id="b", seq=1, sample_rate=RATE,
                                 wall_time=lambda s: s / RATE, gap_ms=1200, model_name="m", model_sha256="0")
    attributes = json.loads(event.to_json())
    event_type = attributes.pop("event_type")
    assert event_type in SequenceDiscovery(**COMMON).to_dict()["event_types"]
    assert attributes["digits"] == "4277"


def test_a_code_trigger_fires_on_its_code_only(reference):
    trigger = CodeTriggerDiscovery(**COMMON, code="4277")
    assert trigger.topic("homeassistant") == "homeassistant/device_automation/kitchen/code_4277/config"
    payload = json.loads(trigger.to_json())
    assert payload == {
        "automation_type": "trigger", "topic": "digitspot/kitchen/sequence", "type": "spoken",
        "subtype": "code 4277", "payload": "4277", "value_template": "{{ value_json.digits }}", "qos": 1,
        "device": DiscoveryConfig(**COMMON).to_dict()["device"],
    }
    # Home Assistant renders value_template with the message as value_json and compares it with payload
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(payload["value_template"])
    for string, fires in [(reference.strings[0], True), (reference.strings[1], False)]:
        event = build_sequence_event(string, device_id="kitchen", boot_id="b", seq=1, sample_rate=RATE,
                                     wall_time=lambda s: s / RATE, gap_ms=1200, model_name="m", model_sha256="0")
        assert (template.render(value_json=json.loads(event.to_json())) == payload["payload"]) is fires


@pytest.mark.parametrize("code", ["", "12a4", "４２", "1" * 33, " 42"])
def test_a_code_must_be_digits(code):
    with pytest.raises(ValueError, match="1-32 digits"):
        CodeTriggerDiscovery(**COMMON, code=code)


def test_all_sequence_discovery_messages():
    messages = sequence_discovery_messages(**COMMON, discovery_prefix="ha", codes=["4271", "0", "4271"])
    assert [topic for topic, _ in messages] == [
        "ha/event/kitchen/sequence/config",
        "ha/device_automation/kitchen/code_4271/config",
        "ha/device_automation/kitchen/code_0/config",
    ]
    assert all(isinstance(json.loads(payload), dict) for _, payload in messages)

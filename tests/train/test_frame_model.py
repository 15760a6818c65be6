"""Fast checks of the streaming CTC pieces: the frame model's shape and reach, the losses, crop targets,
the reference streaming decoder (golden values on hand-made posteriors) and ONNX parity of the student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitspot.train.ctc_scenes import Placed, crop_targets, frame_range
from digitspot.train.ctc_training import ctc_loss, frame_kd_loss, target_mask
from digitspot.train.frame_model import FrameNet, count_parameters, student_config, teacher_config
from digitspot.train.stream_decode_reference import (
    Emission,
    GreedyCtcDecoder,
    StreamSettings,
    greedy_decode,
    stream_decode,
)


@pytest.fixture(scope="module")
def student() -> FrameNet:
    torch.manual_seed(0)
    return FrameNet(student_config()).eval()


def test_student_shape_geometry_and_size(student):
    assert count_parameters(student) <= 150_000
    assert count_parameters(FrameNet(teacher_config())) > 2 * count_parameters(student)
    with torch.no_grad():
        for samples in (8000, 12345, 24000):
            out = student(torch.randn(2, samples) * 0.1)
            assert out.shape == (2, student.n_frames(samples), 12)
    assert student.n_frames(8000) == 49
    assert student.geometry() == {"frame_hop_samples": 160, "frame_length_samples": 336,
                                  "right_context_samples": 640, "left_context_samples": 5360}


def test_a_frame_never_reads_past_its_right_context(student):
    """Changing audio after frame j's end + right context leaves frame j's logits as they were: the
    daemon's lookahead covers everything a decided frame depends on (the window's peak level stays put)."""
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(8000) * 0.01).astype(np.float32)
    audio[1000:1400] = 0.5 * np.sin(2 * np.pi * 500 * np.arange(400) / 8000)  # the loudest part, early
    j = 20
    reach = j * student.frame_hop_samples + student.frame_length_samples + student.right_context_samples
    changed = audio.copy()
    changed[reach:] += (rng.standard_normal(8000 - reach) * 0.05).astype(np.float32)
    earlier = audio.copy()
    earlier[reach - 160:] += (rng.standard_normal(8000 - reach + 160) * 0.05).astype(np.float32)
    with torch.no_grad():
        a, b, c = (student(torch.from_numpy(x)[None])[0] for x in (audio, changed, earlier))
    assert torch.allclose(a[: j + 1], b[: j + 1], atol=1e-5)
    assert float((a[j] - c[j]).abs().max()) > 1e-7  # one hop earlier is inside its reach (weakly, at init)


def test_ctc_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = FrameNet(student_config(), specaugment=False)
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.standard_normal((4, 8000)) * 0.01).astype(np.float32))
    t = np.arange(8000) / 8000
    for row, f in enumerate((300, 600, 900, 1200)):  # four "words": tones at distinct pitches
        x[row, 2000:5000] += torch.from_numpy((0.3 * np.sin(2 * np.pi * f * t[2000:5000])).astype(np.float32))
    targets = [[1], [2], [3], [4]]
    lo, hi = np.zeros(4, int), np.full(4, 49)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        model.train()
        loss = ctc_loss(model(x), targets, lo, hi)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_ctc_loss_reads_only_the_target_frames():
    torch.manual_seed(0)
    logits = torch.randn(2, 30, 12)
    lo, hi = np.array([5, 0]), np.array([25, 30])
    got = ctc_loss(logits, [[3, 4], [7]], lo, hi)
    logp = F.log_softmax(logits, -1)
    want = (F.ctc_loss(logp[0, 5:25, None], torch.tensor([[3, 4]]), [20], [2], reduction="sum") / 2
            + F.ctc_loss(logp[1, :, None], torch.tensor([[7]]), [30], [1], reduction="sum")) / 2
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    changed = logits.clone()
    changed[0, :5] = torch.randn(5, 12)
    changed[0, 25:] = torch.randn(5, 12)
    assert float(ctc_loss(changed, [[3, 4], [7]], lo, hi)) == pytest.approx(float(got), rel=1e-6)


def test_frame_kd_loss_formula():
    torch.manual_seed(0)
    s, t = torch.randn(2, 10, 12), torch.randn(2, 10, 12)
    mask = target_mask((2, 10), np.array([0, 2]), np.array([10, 6]))
    kl = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="none").sum(-1)
    want = kl[mask].mean() * 16
    assert float(frame_kd_loss(s, t, mask, 4.0)) == pytest.approx(float(want), rel=1e-5)
    assert float(frame_kd_loss(t, t, mask, 4.0)) == pytest.approx(0.0, abs=1e-6)


def test_crop_targets_drop_cut_segments():
    segs = [Placed(-100, 200, (5,)), Placed(300, 500, (2,)), Placed(600, 900, (3,)), Placed(950, 1400, (4,))]
    assert crop_targets(segs, 1000, margin_after=50, right_guard=0) == ([2, 3], 250, 950)
    # a segment ending inside the right guard is cut as well, and one straddling the new edge follows it
    assert crop_targets(segs[1:3], 1000, 0, right_guard=150) == ([2], 0, 600)
    # overlapping segments: the cut one at the left takes its overlapping neighbour with it
    assert crop_targets([Placed(-50, 300, (1,)), Placed(250, 600, (2,)), Placed(700, 800, (3,))], 1000, 0, 0) == (
        [3], 600, 1000)
    assert crop_targets([Placed(-50, 1200, (1,))], 1000, 0, 0) == ([], 0, 0)
    assert frame_range(0, 8000, 160, 336, 49) == (0, 49)
    assert frame_range(1000, 4000, 160, 336, 49) == (6, 24)


def test_decided_frames_tile_the_stream():
    s = StreamSettings(window_samples=8000, step_samples=800, lookahead_samples=640, frame_hop_samples=160,
                       frame_length_samples=336)
    assert s.decided_frames() == range(39, 44)
    ends = [pos - 8000 + j * 160 + 336 for pos in range(800, 8001, 800) for j in s.decided_frames()]
    assert ends == list(range(ends[0], ends[-1] + 1, 160))  # every frame once, in order
    with pytest.raises(ValueError, match="multiple of frame_hop"):
        StreamSettings(step_samples=500)


def _post(label: int, p: float) -> np.ndarray:
    out = np.full(12, (1 - p) / 11)
    out[label] = p
    return out


def test_greedy_decoder_golden():
    # labels: 0 blank, 1.. digits 0..9, 11 filler
    frames = [(0, .9), (3, .6), (3, .95), (0, .8), (3, .7), (11, .9), (5, .8), (5, .9), (7, .4), (0, .9),
              (1, .8), (1, .9), (10, .6)]
    post = np.stack([_post(lab, p) for lab, p in frames])
    assert greedy_decode(post, 0.0) == [2, 2, 4, 6, 0, 9]
    assert greedy_decode(post, 0.5) == [2, 2, 4, 0, 9]  # the 0.4 run of "6" is not published
    dec = GreedyCtcDecoder(0.5)
    got = [dec.push(p, i * 160, i * 800) for i, p in enumerate(post[:4])]
    assert got[:3] == [None, None, None]
    assert got[3] == Emission(digit=2, confidence=pytest.approx(0.95), frame_end=320, published_at=2400)


class RampModel:
    """Fake model: the audio is a ramp (sample i holds i * 1e-6), so each window tells where it is in the
    stream; the model fires digit 7 (label 8) on the frames ending in [4000, 4320) of the stream."""

    def __call__(self, windows):
        out = np.zeros((len(windows), 49, 12), np.float32)
        out[..., 0] = 5.0
        for b, w in enumerate(windows):
            pos = round(float(w[-1]) * 1e6) + 1  # samples received so far
            for j in range(49):
                end = pos - 8000 + j * 160 + 336
                if 4000 <= end < 4320 and w[-1] > 0:
                    out[b, j, 8] = 10.0
        return out


def test_stream_decode_golden_timing():
    audio = (np.arange(9000) * 1e-6).astype(np.float32)
    settings = StreamSettings(window_samples=8000, step_samples=800, lookahead_samples=640, frame_hop_samples=160,
                              frame_length_samples=336, min_confidence=0.5)
    out = stream_decode(RampModel(), audio, settings)
    # frames ending at 4016 and 4176 fire; the run ends with the frame ending at 4336, decided in the call
    # made when 4336 + 640 <= position, i.e. at 5600 (frames ending 4160..4959 are decided then)
    assert [(e.digit, e.frame_end, e.published_at) for e in out] == [(7, 4016, 5600)]
    assert out[0].confidence == pytest.approx(float(np.exp(10) / (np.exp(10) + np.exp(5) + 10)), rel=1e-5)


def test_student_onnx_parity(tmp_path, student):
    pytest.importorskip("onnxruntime")
    from digitspot.train.frame_export import export_frame_onnx

    rng = np.random.default_rng(2)
    audio = (rng.standard_normal((3, 8000)) * 0.05).astype(np.float32)
    audio[0] = 0.0
    report = export_frame_onnx(student, tmp_path / "student.onnx", 8000, audio)
    assert report["shape"] == [3, 49, 12]
    assert report["max_abs_diff"] <= 1e-4


def test_card_fields_state_the_streaming_geometry(student):
    from digitspot.train.frame_export import streaming_card_fields
    from digitspot.train.onnx_tools import ExportError

    fields = streaming_card_fields(student, 8000, 800, 0.5)
    assert fields == {"model_kind": "ctc-stream", "labels": ["blank", "0", "1", "2", "3", "4", "5", "6", "7", "8",
                                                             "9", "filler"],
                      "window_samples": 8000, "frame_hop_samples": 160, "frame_length_samples": 336,
                      "step_samples": 800, "lookahead_samples": 640, "n_frames": 49,
                      "thresholds": {"min_confidence": 0.5, "sequence_gap_ms": 1200}}
    StreamSettings(**{k: fields[k] for k in ("window_samples", "step_samples", "lookahead_samples",
                                             "frame_hop_samples", "frame_length_samples")})
    with pytest.raises(ExportError, match="left context"):
        streaming_card_fields(student, 8000, 2400, 0.5)


def test_a_zeroed_stream_start_moves_the_targets():
    from digitspot.train.ctc_scenes import Scene, crop_scene

    scene = Scene(np.ones(8000, np.float32), [Placed(1000, 2000, (3,)), Placed(2400, 2800, (4,)),
                                              Placed(3000, 4000, (5,))], "string", 0.1)
    assert crop_scene(scene, 8000, 0, 100, 640)[1:] == ([3, 4, 5], 0, 7360)
    # zeros up to 2500: the first take is gone, the second cut (no target until 100 samples after its end)
    assert crop_scene(scene, 8000, 0, 100, 640, zero_prefix=2500)[1:] == ([5], 2900, 7360)


def test_bank_labels_and_edit_counts():
    from digitspot.train.ctc_evaluate import edit_counts
    from digitspot.train.ctc_scenes import bank_label

    assert [bank_label(x) for x in (-1, 0, 4, 9)] == [11, 1, 5, 10]
    assert edit_counts([1, 2, 3, 4], [1, 2, 3, 4]) == {"sub": 0, "del": 0, "ins": 0}
    assert edit_counts([1, 2, 3, 4], [1, 3, 4]) == {"sub": 0, "del": 1, "ins": 0}
    assert edit_counts([1, 2, 3], [9, 1, 2, 5]) == {"sub": 1, "del": 0, "ins": 1}


def test_a_bank_phrase_keeps_its_targets():
    """A phrase has no word times, so a crop must hold it whole: the batch grows to fit it."""
    from digitspot.train.ctc_scenes import SceneConfig, SceneMaker, Segment, SegmentPool, make_batch

    pool = SegmentPool()
    pool.add_digit(Segment(np.full(3000, 0.1, np.float32), (2,), "fsdd:a", "digit"))
    pool.phrases.append(Segment(np.full(24000, 0.1, np.float32), (11, 4, 8, 11), "bank:v", "string"))
    cfg = SceneConfig(p_single=0, p_string=0, p_filler=0, p_mixed=0, p_empty=0, p_bank_phrase=1.0,
                      p_stream_start=0.0, p_room=0.0, lengths_s=(1.0,), length_weights=(1.0,))
    model = FrameNet(student_config())
    batch = make_batch(SceneMaker(pool, cfg), 8, np.random.default_rng(0), model.geometry(), model.n_frames)
    assert batch.audio.shape[1] > 24000
    assert batch.targets == [[11, 4, 8, 11]] * 8

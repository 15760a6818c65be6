"""Fast checks of the pieces: splits, augmentation, distillation loss, synthetic voice trimming."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitspot.train import data as fsdd
from digitspot.train.augment import AugmentConfig, augment_clip, change_speed, colored_noise
from digitspot.train.synth import trim_silence
from digitspot.train.training import kd_loss


@pytest.fixture(scope="module")
def utterances(fsdd_dir):
    return fsdd.scan_fsdd(fsdd_dir)


def test_official_split(utterances):
    split = fsdd.make_split(utterances, "official")
    assert len(split.test) == 300 and all(u.take <= 4 for u in split.test)
    assert len(split.validation) == 300 and all(45 <= u.take <= 49 for u in split.validation)
    assert len(split.train) == 2400
    test = {u.path for u in split.test}
    assert not test & {u.path for u in split.train + split.validation}


def test_speaker_split(utterances):
    split = fsdd.make_split(utterances, "speaker:george")
    assert {u.speaker for u in split.test} == {"george"} and len(split.test) == 500
    assert "george" not in {u.speaker for u in split.train + split.validation}


def test_unknown_speaker(utterances):
    with pytest.raises(fsdd.SplitError, match="unknown speaker 'alice'"):
        fsdd.make_split(utterances, "speaker:alice")


def test_augmentation_shapes_and_ranges():
    rng = np.random.default_rng(0)
    clip = (0.3 * np.sin(np.arange(4000) * 0.05)).astype(np.float32)
    assert len(change_speed(clip, 1200)) == 2000
    assert len(change_speed(clip, -1200)) == 8000
    for exponent in (0.0, 1.0, 2.0):
        noise = colored_noise(8000, exponent, rng)
        assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-3)
    long_clip = np.tile(clip, 3)
    for c in (clip, long_clip):
        for _ in range(20):
            out = augment_clip(c, 8000, rng, AugmentConfig())
            assert out.shape == (8000,) and out.dtype == np.float32
            assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0


def test_kd_loss_matches_formula():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    expected = 0.7 * F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16 \
        + 0.3 * F.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, alpha=0.7, temperature=4.0), expected)
    assert float(kd_loss(t, t, y, alpha=1.0, temperature=4.0)) == pytest.approx(0.0, abs=1e-6)


def test_trim_silence():
    x = np.zeros(8000, np.float32)
    x[3000:4000] = 0.5
    y = trim_silence(x, 8000)
    assert 1000 <= len(y) <= 1400


def test_weight_average_follows_the_ema_formula():
    from torch import nn

    from digitspot.train.training import WeightAverage

    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    avg.update(model)  # step 1: decay ramps to (1 + 1) / (10 + 1)
    d = 2 / 11
    assert torch.allclose(avg.model[0].weight, d * start["0.weight"] + (1 - d) * model[0].weight)
    assert int(avg.model[1].num_batches_tracked) == 7  # integer buffers are copied, not averaged
    for _ in range(200):
        avg.update(model)  # the decay is capped at 0.9: the average converges to the (now fixed) weights
    assert torch.allclose(avg.model[0].weight, model[0].weight, atol=1e-6)
    assert avg.model is not model and avg.model[0].weight.data_ptr() != model[0].weight.data_ptr()


def test_noise_free_twin_is_the_same_window_without_the_noise():
    """The teacher's input: same speed, reverberation, gain and placement as the student's, no noise."""
    from digitspot.train.augment import augment_clip_pair

    clip = (0.3 * np.sin(np.arange(4000) * 0.05)).astype(np.float32)
    noisy_cfg = AugmentConfig(p_noise=1.0, p_speed=1.0, p_reverb=1.0, snr_db_min=0.0, snr_db_max=0.0)
    for seed in range(5):
        noisy, twin = augment_clip_pair(clip, 8000, np.random.default_rng(seed), noisy_cfg)
        quiet = augment_clip(clip, 8000, np.random.default_rng(seed), replace(noisy_cfg, p_noise=0.0))
        np.testing.assert_array_equal(twin, quiet)
        assert np.sqrt(np.mean((noisy - twin) ** 2)) > 0.01  # 0 dB SNR noise was added to one of them only
    # the plain path draws the same random numbers as before the twin existed
    a = augment_clip(clip, 8000, np.random.default_rng(7), AugmentConfig())
    b, _ = augment_clip_pair(clip, 8000, np.random.default_rng(7), AugmentConfig())
    np.testing.assert_array_equal(a, b)


def _noise_clips():
    """Eight 3000-sample noise clips labelled 0..7: enough for a one-batch training loop."""
    from digitspot.train.data import ClipSet

    rng = np.random.default_rng(0)
    return ClipSet([(0.3 * rng.standard_normal(3000)).astype(np.float32) for _ in range(8)], list(range(8)),
                   ["x"] * 8)


@pytest.mark.parametrize("noise_free", [True, False])
def test_distillation_shows_the_teacher_the_noise_free_window(noise_free):
    from digitspot.train.model import build_student
    from digitspot.train.training import DistillConfig, ValidationSet, train_loop

    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    student, teacher = build_student(channels=8, blocks=1), build_student(channels=8, blocks=1)
    student.register_forward_pre_hook(lambda _m, args: seen["student"].append(args[0].clone()) if _m.training else None)
    teacher.register_forward_pre_hook(lambda _m, args: seen["teacher"].append(args[0].clone()))
    clips = _noise_clips()
    aug = AugmentConfig(p_noise=1.0, snr_db_min=0.0, snr_db_max=0.0)
    cfg = DistillConfig(epochs=1, batch_size=8, max_batches_per_epoch=1, teacher_noise_free=noise_free)
    train_loop(student, clips, ValidationSet(clips, aug), cfg, aug, teacher=teacher, progress=False)
    (x_student,), (x_teacher,) = seen["student"], seen["teacher"]
    assert x_student.shape == x_teacher.shape == (8, 8000)
    assert torch.equal(x_student, x_teacher) is not noise_free


def test_training_hands_back_weights_in_the_default_layout():
    """Training runs channels-last for speed; checkpoints and the exporter must get ordinary tensors back,
    the teacher too, and a pruned model keeps its zeros."""
    from digitspot.train.model import build_student, build_teacher
    from digitspot.train.training import (
        DistillConfig,
        PruneConfig,
        ValidationSet,
        prune_iteratively,
        sparsity,
        train_loop,
    )

    # (the student's kernels are 1-channel or 1x1, the same in either layout; the teacher's are not)
    student, teacher = build_student(channels=8, blocks=1), build_teacher(width=4, stem_stride=2)
    clips = _noise_clips()
    aug = AugmentConfig()
    val = ValidationSet(clips, aug)
    cfg = DistillConfig(epochs=1, batch_size=8, max_batches_per_epoch=1, ema_decay=0.9)
    train_loop(student, clips, val, cfg, aug, teacher=teacher, progress=False)
    prune_iteratively(student, teacher, clips, val, PruneConfig(epochs=1, batch_size=8, max_batches_per_epoch=1,
                                                                final_epochs=1), aug, progress=False)
    assert sparsity(student) == pytest.approx(0.4, abs=0.01)
    for model in (student, teacher):
        four_d = [t for t in model.state_dict().values() if t.dim() == 4]
        assert four_d and all(t.is_contiguous() for t in four_d)


class _WorseningValidation:
    """A validation set whose score only falls: every epoch after the first is a 'bad' one."""

    def __init__(self):
        self.calls = 0

    def score(self, _model) -> dict:
        self.calls += 1
        value = 1.0 / self.calls
        return {"clean": value, "hard": value, "score": value}


@pytest.mark.parametrize(("early_stop_from", "epochs_run"), [(0.0, 3), (0.5, 5), (1.0, 8)])
def test_patience_counts_only_after_the_early_part_of_the_schedule(early_stop_from, epochs_run):
    """Patience 2 over 8 epochs of a falling score: stops after epoch 3 when every bad epoch counts, after
    epoch 5 when only those from half-way (epoch 4) on count, and never when none do."""
    from digitspot.train.model import build_student
    from digitspot.train.training import LoopConfig, train_loop

    cfg = LoopConfig(epochs=8, batch_size=8, max_batches_per_epoch=1, patience=2, early_stop_from=early_stop_from)
    hist = train_loop(build_student(channels=8, blocks=1), _noise_clips(), _WorseningValidation(), cfg,
                      AugmentConfig(), progress=False)
    assert len(hist.epochs) == epochs_run
    assert hist.best_epoch == 1
    assert hist.stopped.startswith("early stop") is (epochs_run < 8)

"""Fast checks of the pieces: splits, augmentation, distillation loss, synthetic voice trimming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train import data as fsdd
from train.augment import AugmentConfig, augment_clip, change_speed, colored_noise
from train.synth import trim_silence
from train.training import kd_loss


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

    from train.training import WeightAverage

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

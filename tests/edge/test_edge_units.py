"""Unit tests of the daemon's stages: resampler, segmenter rules, event schema, publisher queue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitspot.edge.audio_io import load_audio
from digitspot.edge.classifier import Prediction
from digitspot.edge.config import build_config
from digitspot.edge.devtools.local_broker import free_port
from digitspot.edge.events import DigitEvent, DiscoveryConfig, ScoredDigit
from digitspot.edge.resampler import StreamingResampler
from digitspot.edge.vad_segmenter import SegmenterSettings, VadSegmenter

RATE = 8000


@pytest.mark.parametrize("rate_in", [16000, 48000, 44100, 22050])
def test_resampler_keeps_tones_and_time_alignment(rate_in):
    t = np.arange(rate_in) / rate_in
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    r = StreamingResampler(rate_in, RATE)
    chunks = [r.process(x[i : i + rate_in // 100]) for i in range(0, len(x), rate_in // 100)]
    y = np.concatenate([*chunks, r.flush()])
    assert abs(len(y) - RATE) <= 2
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(y)) / RATE)
    assert np.max(np.abs(y[200:-200] - ref[200:-200])) < 0.02  # same phase: no delay in the sample index
    assert r.delay_seconds < 0.003


def test_resampler_removes_what_the_output_cannot_hold():
    t = np.arange(48000) / 48000
    x = (0.5 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)  # above 4 kHz Nyquist at 8 kHz
    y = StreamingResampler(48000, RATE).process(x)
    assert np.sqrt(np.mean(y[100:-100] ** 2)) < 0.5 / np.sqrt(2) * 10 ** (-40 / 20)


def fake_classifier(confidence: float, digit: int = 7):
    calls = []

    def classify(samples: np.ndarray) -> Prediction:
        calls.append(len(samples))
        probs = [(1 - confidence) / 9] * 10
        probs[digit] = confidence
        return Prediction(str(digit), digit, confidence, tuple(probs), tuple(str(i) for i in range(10)))

    classify.calls = calls
    return classify


def feed(seg: VadSegmenter, audio: np.ndarray, chunk: int = 80):
    out = []
    for i in range(0, len(audio), chunk):
        for u in seg.push(audio[i : i + chunk], (i + chunk) / RATE):
            out.append((u, (i + chunk) / RATE))
    out += [(u, len(audio) / RATE) for u in seg.finish()]
    return out


def noisy(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 10 ** (-65 / 20), n).astype(np.float32)


@pytest.fixture(scope="module")
def seven(fsdd_dir):
    return load_audio(fsdd_dir / "7_jackson_0.wav", RATE)


def test_confident_word_ends_after_offset_ms(seven):
    audio = noisy(RATE * 2 + len(seven))
    audio[RATE : RATE + len(seven)] += seven
    seg = VadSegmenter(SegmenterSettings(), fake_classifier(0.99))
    got = [(u, t) for u, t in feed(seg, audio) if u.accepted]
    assert len(got) == 1
    u, decided_at = got[0]
    true_end = (RATE + len(seven)) / RATE
    assert u.early and u.prediction.digit == 7
    assert abs(u.end_sample / RATE - true_end) < 0.12  # FSDD takes end with some quiet of their own
    assert decided_at - u.end_sample / RATE <= 0.05 + 0.011  # offset_ms + one frame


def test_doubtful_word_waits_up_to_hangover(seven):
    audio = noisy(RATE * 2 + len(seven))
    audio[RATE : RATE + len(seven)] += seven
    seg = VadSegmenter(SegmenterSettings(), fake_classifier(0.55))
    (u, decided_at), = [(u, t) for u, t in feed(seg, audio) if u.accepted]
    wait = decided_at - u.end_sample / RATE
    assert 0.05 < wait <= 0.18 + 0.011


def test_a_closure_inside_a_word_is_bridged_when_unsure(seven):
    """A 100 ms silent gap (like the closure in "six") does not split a word the model is unsure about."""
    cut = int(0.25 * RATE)
    word = np.concatenate([seven[:cut], np.zeros(int(0.1 * RATE), np.float32), seven[cut:]])
    audio = noisy(RATE * 2 + len(word))
    audio[RATE : RATE + len(word)] += word
    seg = VadSegmenter(SegmenterSettings(), fake_classifier(0.6))
    accepted = [u for u, _ in feed(seg, audio) if u.accepted]
    assert len(accepted) == 1
    assert accepted[0].end_sample / RATE > 1.0 + len(word) / RATE - 0.15


def test_tail_after_an_early_decision_is_not_a_second_digit(seven):
    burst = seven[int(0.1 * RATE) : int(0.25 * RATE)]  # 150 ms of loud speech
    word = np.concatenate([seven[: int(0.3 * RATE)], np.zeros(int(0.09 * RATE), np.float32), burst])
    audio = noisy(RATE * 2 + len(word))
    audio[RATE : RATE + len(word)] += word
    settings = SegmenterSettings()
    seg = VadSegmenter(settings, fake_classifier(0.99))
    results = [u for u, _ in feed(seg, audio)]
    accepted = [u for u in results if u.accepted]
    assert len(accepted) == 1 and accepted[0].early and accepted[0].prediction.digit == 7
    # The burst became a segment of its own, and the tail guard (nothing else) turned it down.
    rejected = [u for u in results if not u.accepted]
    assert [u.reason for u in rejected] == ["tail of the previous word"], [u.reason for u in results]
    gap_ms = (rejected[0].start_sample - accepted[0].end_sample) * 1000 / RATE
    assert 0 <= gap_ms <= settings.tail_guard_ms


@pytest.mark.parametrize("kind", ["silence", "click", "long_noise_burst", "steady_noise"])
def test_non_words_are_not_published(kind):
    audio = noisy(RATE * 4)
    if kind == "click":
        audio[RATE : RATE + 80] += np.random.default_rng(1).normal(0, 0.3, 80).astype(np.float32)
    elif kind == "long_noise_burst":
        audio[RATE : 3 * RATE] += np.random.default_rng(1).normal(0, 0.05, 2 * RATE).astype(np.float32)
    elif kind == "steady_noise":
        audio += np.random.default_rng(2).normal(0, 0.02, len(audio)).astype(np.float32)
    classify = fake_classifier(0.99)
    seg = VadSegmenter(SegmenterSettings(), classify)
    assert not [u for u, _ in feed(seg, audio) if u.accepted]


def test_required_confidence_falls_from_early_to_min():
    seg = VadSegmenter(SegmenterSettings(offset_ms=50, hangover_ms=150, early_confidence=0.9, min_confidence=0.5),
                       fake_classifier(0.9))
    assert seg.required_confidence(5) == pytest.approx(0.9)
    assert seg.required_confidence(10) == pytest.approx(0.7)
    assert seg.required_confidence(15) == pytest.approx(0.5)


def test_digit_event_schema_round_trip():
    e = DigitEvent(device_id="d", digit=3, confidence=0.91234, top3=[ScoredDigit(3, 0.91), ScoredDigit(8, 0.05),
                   ScoredDigit(2, 0.01)], speech_start=1, speech_end=2, published_at=3, latency_ms=1, seq=4,
                   boot_id="b", model_name="m", model_sha256="s", audio_start_ms=10, audio_end_ms=20)
    d = json.loads(e.to_json())
    for key in ("schema_version", "device_id", "event_type", "digit", "confidence", "top3", "speech_start",
                "speech_end", "published_at", "latency_ms", "seq", "boot_id", "model"):
        assert key in d
    assert d["event_type"] == "3" and d["model"] == {"name": "m", "sha256": "s"}
    assert DigitEvent.from_dict(d).to_dict() == d


def test_discovery_config_is_a_home_assistant_event_entity():
    c = DiscoveryConfig("kitchen", "Kitchen", "digitspot/kitchen", "0.1.0", "m").to_dict()
    assert c["event_types"] == [str(i) for i in range(10)]
    assert c["unique_id"] == "digitspot_kitchen_digit" and c["availability_topic"] == "digitspot/kitchen/status"


def test_publisher_queue_is_bounded_and_drops_the_oldest():
    from digitspot.edge.mqtt_publisher import MqttPublisher

    cfg = build_config({"mqtt_host": "127.0.0.1", "mqtt_port": free_port(), "queue_size": 10, "device_id": "q"},
                       None, environ={})
    pub = MqttPublisher(cfg, lambda: "{}", None)  # never started: the broker is "down"
    for seq in range(1, 16):
        pub.publish_digit(json.dumps({"seq": seq}), seq)
    assert pub.dropped == 5
    assert [item.seq for item in pub.pending] == list(range(6, 16))


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("vad_mode", [0, 3])
def test_every_frame_length_and_vad_mode_finds_the_word(seven, frame_ms, vad_mode):
    audio = noisy(RATE * 2 + len(seven))
    audio[RATE : RATE + len(seven)] += seven
    seg = VadSegmenter(SegmenterSettings(frame_ms=frame_ms, vad_mode=vad_mode), fake_classifier(0.99))
    assert len([u for u, _ in feed(seg, audio, chunk=77) if u.accepted]) == 1

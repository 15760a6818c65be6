"""The daemon's streaming path (``digitspot.edge.stream_pipeline``) on the deterministic fixture
``tests/fixtures/stream_fixture.onnx``: chunks in, digit and sequence events out, through a recording
publisher, with exact golden values; then ``digitspot-edge run`` serving that model as a user runs it,
against a real Mosquitto and with ``--no-mqtt --print``.

The test clock is the audio itself: a chunk "arrives" at ``T0 + (its last sample + 1) / 8000`` and the
pipeline's wall clock reads the arrival time of the chunk being processed, so every time in an event is
a golden value (the latency is then the audio-clock delay of the decision, which is what the pipeline
adds; the time a model call takes is the machine's and belongs to the benchmarks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile as sf
from test_stream import GOLDEN_HITS, GOLDEN_LENGTH, STREAM_MODEL, golden_stream, noise, silence, tone

from digitspot.edge.card import ModelCard, load_card
from digitspot.edge.config import build_config
from digitspot.edge.errors import ConfigError, ModelError
from digitspot.edge.events import DigitEvent
from digitspot.edge.sequences import SequenceEvent
from digitspot.edge.stream_model import OnnxStreamModel
from digitspot.edge.stream_pipeline import ActivityGate, StreamPipeline, StreamSettings

RATE = 8000
T0 = 1_800_000_000.0
T0_MS = 1_800_000_000_000
BOOT = "0123456789abcdef"


@dataclass
class RecordingPublisher:
    """Stands in for MqttPublisher: records what it is handed, in order."""

    calls: list[tuple[str, int, dict]] = field(default_factory=list)

    def publish_digit(self, payload: str, seq: int) -> None:
        self.calls.append(("digit", seq, json.loads(payload)))

    def publish_sequence(self, payload: str, seq: int) -> None:
        self.calls.append(("sequence", seq, json.loads(payload)))

    def summary(self) -> list[tuple[str, int, str]]:
        return [(kind, seq, str(d["digit"]) if kind == "digit" else d["digits"]) for kind, seq, d in self.calls]


@dataclass
class Result:
    pipeline: StreamPipeline
    publisher: RecordingPublisher
    events: list[DigitEvent | SequenceEvent]

    @property
    def payloads(self) -> list[dict]:
        return [d for _, _, d in self.publisher.calls]


def run_pipeline(model: OnnxStreamModel, audio: np.ndarray, chunk: int, **settings) -> Result:
    publisher = RecordingPublisher()
    clock = {"now": T0}
    kw = {"device_id": "kitchen", "boot_id": BOOT, "min_confidence": 0.6, **settings}
    pipeline = StreamPipeline(model, StreamSettings(**kw), publisher, now=lambda: clock["now"])
    events = []
    for start in range(0, len(audio), chunk):
        piece = audio[start:start + chunk]
        clock["now"] = T0 + (start + len(piece)) / RATE
        events += pipeline.push(piece, clock["now"])
    events += pipeline.finish()
    return Result(pipeline, publisher, events)


def without_timing(payloads: list[dict]) -> list[dict]:
    """Events minus the moments they were published (which follow the chunking)."""
    return [{k: v for k, v in d.items() if k not in ("published_at", "latency_ms")} for d in payloads]


@pytest.fixture(scope="module")
def model() -> OnnxStreamModel:
    return OnnxStreamModel(STREAM_MODEL)


@pytest.fixture(scope="module")
def golden(model) -> Result:
    """The golden stream of test_stream.py in 10 ms chunks, as the file source delivers it."""
    return run_pipeline(model, golden_stream(), 80)


# -- events ---------------------------------------------------------------------------------------------

def test_digits_then_each_string_after_its_digits(golden):
    assert golden.publisher.summary() == [
        ("digit", 1, "4"), ("digit", 2, "2"), ("digit", 3, "7"), ("digit", 4, "7"), ("sequence", 1, "4277"),
        ("digit", 5, "0"), ("digit", 6, "9"), ("sequence", 2, "09"),
    ]
    # what the caller gets back (to print and log) is what the publisher got, in the same order
    assert [json.loads(e.to_json()) for e in golden.events] == golden.payloads
    assert [type(e) for e in golden.events] == [DigitEvent] * 4 + [SequenceEvent] + [DigitEvent] * 2 + [SequenceEvent]


def test_the_first_digit_event(golden):
    model = golden.pipeline.model
    assert golden.payloads[0] == {
        "schema_version": 1, "device_id": "kitchen", "event_type": "4", "digit": 4, "confidence": 0.9993,
        "top3": [{"digit": 4, "score": 0.9993}, {"digit": 0, "score": 0.0}, {"digit": 1, "score": 0.0}],
        # the run of 4 covers samples [2320, 4480); it is decided by the call at 5600 (700 ms)
        "speech_start": T0_MS + 290, "speech_end": T0_MS + 560, "published_at": T0_MS + 700, "latency_ms": 140,
        "seq": 1, "boot_id": BOOT, "model": {"name": model.card.name, "sha256": model.card.sha256},
        "audio_start_ms": 290, "audio_end_ms": 560, "early": False,
    }


def test_golden_digit_events(golden):
    """Every digit of the reference decoding (test_stream.GOLDEN_HITS), with its ``seq`` and timing:
    ``latency_ms`` is the audio from the end of the digit's run to the call that decided it; the 9 cut by
    the end of the input ends there (its last frame is clamped to the input) and is published at once."""
    digits = [d for d in golden.payloads if d["event_type"] != "sequence"]
    assert [(d["digit"], d["confidence"], d["seq"], d["audio_start_ms"], d["audio_end_ms"], d["latency_ms"])
            for d in digits] == [
        (4, 0.9993, 1, 290, 560, 140),
        (2, 0.9993, 2, 690, 960, 140),
        (7, 0.9993, 3, 950, 1210, 90),
        (7, 0.9993, 4, 1290, 1560, 140),
        (0, 0.9993, 5, 5110, 5390, 110),
        (9, 0.9993, 6, 5410, 5610, 0),
    ]
    want = [(d, c, max(0, s) * 1000 // RATE, min(e, GOLDEN_LENGTH) * 1000 // RATE) for d, c, s, e, _, _ in GOLDEN_HITS]
    assert [(d["digit"], d["confidence"], d["audio_start_ms"], d["audio_end_ms"]) for d in digits] == want
    for d in digits:
        assert d["speech_start"] == T0_MS + d["audio_start_ms"] and d["speech_end"] == T0_MS + d["audio_end_ms"]
        assert d["latency_ms"] == d["published_at"] - d["speech_end"] >= 0


def test_golden_sequence_events(golden):
    strings = [d for d in golden.payloads if d["event_type"] == "sequence"]
    model = golden.pipeline.model
    assert strings[0] == {
        "schema_version": 1, "device_id": "kitchen", "event_type": "sequence", "digits": "4277", "length": 4,
        "confidences": [0.9993] * 4, "digit_seqs": [1, 2, 3, 4],
        "speech_start": T0_MS + 290, "speech_end": T0_MS + 1560,
        # closed by the call at 23200, the first to decide frames past 1200 ms after the last 7's run
        # (12480 + 9600 = 22080: its frames end 22080..22720)
        "published_at": T0_MS + 2900, "audio_start_ms": 290, "audio_end_ms": 1560, "gap_ms": 1200, "seq": 1,
        "boot_id": BOOT, "model": {"name": model.card.name, "sha256": model.card.sha256},
    }
    # the second string is still open when the input ends: finishing closes it
    assert (strings[1]["digits"], strings[1]["digit_seqs"], strings[1]["seq"], strings[1]["audio_start_ms"],
            strings[1]["audio_end_ms"], strings[1]["published_at"]) == ("09", [5, 6], 2, 5110, 5610,
                                                                         T0_MS + GOLDEN_LENGTH * 1000 // RATE)


def test_seq_and_boot_id_discipline(golden, model):
    """Digit events count 1, 2, 3, ... and sequence events 1, 2, ... separately, without gaps; every event
    carries the run's boot_id; a string lists its digits' seq. A new run (a restart) counts from 1 again
    under its own boot_id."""
    digits = [d for d in golden.payloads if d["event_type"] != "sequence"]
    strings = [d for d in golden.payloads if d["event_type"] == "sequence"]
    assert [d["seq"] for d in digits] == list(range(1, len(digits) + 1))
    assert [s["seq"] for s in strings] == list(range(1, len(strings) + 1))
    assert {d["boot_id"] for d in golden.payloads} == {BOOT}
    by_seq = {d["seq"]: str(d["digit"]) for d in digits}
    for s in strings:
        assert "".join(by_seq[q] for q in s["digit_seqs"]) == s["digits"]
    assert [seq for _, seq, _ in golden.publisher.calls] == [d["seq"] for d in golden.payloads]
    again = run_pipeline(model, golden_stream(), 80, boot_id="fedcba9876543210")
    assert without_timing(again.payloads) == without_timing(
        [{**d, "boot_id": "fedcba9876543210"} for d in golden.payloads])


@pytest.mark.parametrize("chunk", [7, 333, 8000])
def test_chunking_changes_only_when_events_are_published(model, golden, chunk):
    got = run_pipeline(model, golden_stream(), chunk)
    assert without_timing(got.payloads) == without_timing(golden.payloads)
    # bigger chunks arrive later: an event can only be published later, never earlier
    assert all(g["published_at"] >= w["published_at"] for g, w in zip(got.payloads, golden.payloads, strict=True))


def test_a_string_closed_by_the_next_digit_comes_before_it(model):
    """With a 100 ms gap, a 3 that starts 120 ms after the 1 begins a new string; here the same model call
    decides the 3 and the passing of the gap, and the string "1" is still handed over first."""
    audio = np.concatenate([silence(800), tone(1, 2000), silence(960), tone(3, 320), silence(4000)])
    got = run_pipeline(model, audio, 80, sequence_gap_ms=100)
    assert got.publisher.summary() == [("digit", 1, "1"), ("sequence", 1, "1"), ("digit", 2, "3"),
                                       ("sequence", 2, "3")]
    first, three = got.payloads[1], got.payloads[2]
    assert first["published_at"] == three["published_at"]  # decided by one call


def test_a_string_cut_at_max_digits_comes_after_its_last_digit(model):
    got = run_pipeline(model, golden_stream(), 80, max_digits=3)
    assert got.publisher.summary() == [
        ("digit", 1, "4"), ("digit", 2, "2"), ("digit", 3, "7"), ("sequence", 1, "427"), ("digit", 4, "7"),
        ("sequence", 2, "7"), ("digit", 5, "0"), ("digit", 6, "9"), ("sequence", 3, "09"),
    ]


def test_the_threshold_and_gap_come_from_the_settings(model):
    """min_confidence 0 lets the doubtful 5 through (one more digit, and its own string: its run is
    2.04 s after 4277's and 1.48 s before 09's); a 2 s gap joins it to the 09, not to 4277."""
    low = run_pipeline(model, golden_stream(), 80, min_confidence=0.0)
    assert [s for k, _, s in low.publisher.summary() if k == "sequence"] == ["4277", "5", "09"]
    wide = run_pipeline(model, golden_stream(), 80, min_confidence=0.0, sequence_gap_ms=2000)
    assert [(s, d["gap_ms"]) for (k, _, s), d in zip(wide.publisher.summary(), wide.payloads, strict=True)
            if k == "sequence"] == [("4277", 2000), ("509", 2000)]


def test_settings_default_to_the_model_card(model):
    settings = StreamSettings.for_model(model, device_id="k", boot_id=BOOT)
    assert (settings.min_confidence, settings.sequence_gap_ms) == (0.6, 1200)
    settings = StreamSettings.for_model(model, device_id="k", boot_id=BOOT, min_confidence=0.3, sequence_gap_ms=800)
    assert (settings.min_confidence, settings.sequence_gap_ms) == (0.3, 800)


def test_no_publisher_still_returns_the_events(model, golden):
    pipeline = StreamPipeline(model, StreamSettings(device_id="kitchen", boot_id=BOOT, min_confidence=0.6))
    events = pipeline.push(golden_stream(), T0 + GOLDEN_LENGTH / RATE) + pipeline.finish()
    assert without_timing([json.loads(e.to_json()) for e in events]) == without_timing(golden.payloads)


# -- end of input -------------------------------------------------------------------------------------------

def test_finish_is_once_and_ends_the_input(model):
    pipeline = StreamPipeline(model, StreamSettings(device_id="k", boot_id=BOOT, min_confidence=0.6))
    assert pipeline.push(tone(5, 1000), T0) == []  # the 5 is still being heard: nothing decided yet
    assert [e.to_dict()["event_type"] for e in pipeline.finish()] == ["5", "sequence"]
    assert pipeline.finish() == []
    with pytest.raises(RuntimeError, match="new StreamPipeline"):
        pipeline.push(tone(5, 80), T0)


def test_an_empty_input_publishes_nothing(model):
    got = run_pipeline(model, np.zeros(0, np.float32), 80)
    assert got.events == [] and got.publisher.calls == []


# -- the activity gate ----------------------------------------------------------------------------------------

def test_the_gate_saves_model_calls_and_changes_no_event(model, golden):
    """Of the golden stream's 57 model calls, the 14 whose window holds only silence are skipped; the
    events are those of a run that calls the model every step."""
    calls, skipped = model.calls, model.skipped_calls
    gated = run_pipeline(model, golden_stream(), 80)
    assert (model.calls - calls, model.skipped_calls - skipped) == (43, 14)
    calls = model.calls
    ungated = run_pipeline(model, golden_stream(), 80, gate=False)
    assert (model.calls - calls, model.skipped_calls - skipped) == (57, 14)
    assert gated.payloads == ungated.payloads == golden.payloads


def runs_of(gate: ActivityGate, audio: np.ndarray, chunk: int) -> list[tuple[int, int, bool]]:
    """(start, end, active) of the gate's decisions, merged into runs of equal activity."""
    runs: list[list] = []
    pos = 0
    for start in range(0, len(audio), chunk):
        for piece, active in gate.split(audio[start:start + chunk]):
            if runs and runs[-1][2] == active and runs[-1][1] == pos:
                runs[-1][1] += len(piece)
            else:
                runs.append([pos, pos + len(piece), active])
            pos += len(piece)
    return [tuple(r) for r in runs]


def test_the_gate_learns_steady_noise_and_hears_a_tone_over_it():
    """Silence is inactive and a tone active from its first frame; steady noise (-45 dBFS) is active
    until the silence has left the floor's two seconds, then inactive; a tone over it is active again."""
    audio = np.concatenate([silence(8000), tone(2, 2000), noise(32000, 3, 0.01),
                            noise(2000, 4, 0.01) + tone(6, 2000, 0.05), noise(8000, 5, 0.01)])
    gate = ActivityGate(80, RATE, onset_db=9.0)
    assert runs_of(gate, audio, 80) == [
        (0, 8000, False), (8000, 24000, True), (24000, 42000, False), (42000, 44000, True), (44000, 52000, False),
    ]
    # the silence ends at 8000 and the noise (from 10000) is active until 24000: two seconds later, the
    # floor's quietest block is the noise's own
    assert gate.floor_db == pytest.approx(-46.7, abs=0.1)
    assert runs_of(ActivityGate(80, RATE, onset_db=9.0), audio, 333) == runs_of(ActivityGate(80, RATE, 9.0), audio, 80)


def test_a_word_at_the_very_start_is_heard(model):
    """Before two seconds of audio the floor is -90 dBFS: a tone from sample 0 runs the model."""
    got = run_pipeline(model, np.concatenate([tone(3, 1600), silence(1600)]), 80)
    assert got.publisher.summary() == [("digit", 1, "3"), ("sequence", 1, "3")]
    assert (got.payloads[0]["audio_start_ms"], got.payloads[0]["audio_end_ms"]) == (0, 210)


def test_in_speech_follows_the_model_window(model):
    """The caller hands on chunks at once while the model runs: from the first active frame until a
    window and a step of audio (1.1 s) have passed without one."""
    pipeline = StreamPipeline(model, StreamSettings(device_id="k", boot_id=BOOT, min_confidence=0.6))
    assert not pipeline.in_speech
    pipeline.push(silence(4000), T0)
    assert not pipeline.in_speech
    pipeline.push(tone(8, 800), T0)
    assert pipeline.in_speech
    pipeline.push(silence(8800 - 80), T0)
    assert pipeline.in_speech
    pipeline.push(silence(80), T0)
    assert not pipeline.in_speech


# -- the card and the settings that pick and shape the streaming path -----------------------------------------

FIXTURES = STREAM_MODEL.parent


def test_the_card_says_which_path_serves_a_model():
    assert load_card(STREAM_MODEL).model_kind == "ctc-stream"
    assert load_card(FIXTURES / "fixture.onnx").model_kind == "window-classifier"  # a card without the key


def test_a_card_of_another_kind_or_without_its_streaming_fields_is_refused():
    card = json.loads((FIXTURES / "stream_fixture.onnx.json").read_text())
    with pytest.raises(ModelError, match="model_kind = 'ctc-beam' is not one this runtime serves"):
        ModelCard.from_dict({**card, "model_kind": "ctc-beam"})
    with pytest.raises(ModelError, match="no lookahead_samples"):
        ModelCard.from_dict({k: v for k, v in card.items() if k != "lookahead_samples"})


def test_string_settings_from_flags_toml_and_environment(tmp_path):
    cfg = build_config({"trigger_codes": "4271, 0042 4271"}, environ={})
    assert (cfg.trigger_codes, cfg.sequence_gap_ms) == (["4271", "0042"], None)
    toml = tmp_path / "edge.toml"
    toml.write_text('trigger_codes = ["0042"]\nsequence_gap_ms = 900\n')
    cfg = build_config({}, toml, environ={"DIGITSPOT_SEQUENCE_GAP_MS": "700"})
    assert (cfg.trigger_codes, cfg.sequence_gap_ms) == (["0042"], 700)
    assert build_config({}, environ={"DIGITSPOT_TRIGGER_CODES": ""}).trigger_codes == []


@pytest.mark.parametrize(("flags", "toml", "message"), [
    ({"trigger_codes": "42a"}, None, "'42a' is not a code"),
    ({}, "trigger_codes = [42]", "quote each code"),
    ({"sequence_gap_ms": 0}, None, "sequence_gap_ms = 0: must be between 1 and 60000"),
])
def test_bad_string_settings_are_refused(tmp_path, flags, toml, message):
    path = None
    if toml is not None:
        path = tmp_path / "edge.toml"
        path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        build_config(flags, path, environ={})


# -- the daemon ------------------------------------------------------------------------------------------------

GOLDEN_EVENTS = [("4", 1), ("2", 2), ("7", 3), ("7", 4), ("sequence", 1), ("0", 5), ("9", 6), ("sequence", 2)]


def tone_stream_wav(tmp_path) -> str:
    """The golden stream as a float WAV: the daemon reads exactly the samples the unit tests push."""
    path = tmp_path / "tones.wav"
    sf.write(str(path), golden_stream(), RATE, subtype="FLOAT")
    return str(path)


def check_daemon_events(events: list[dict], golden: Result) -> None:
    """The daemon's events are the pipeline's golden ones (under the daemon's boot_id and device id; the
    wall-clock fields depend on when the file was read)."""
    assert [(e["event_type"], e["seq"]) for e in events] == GOLDEN_EVENTS
    assert len({e["boot_id"] for e in events}) == 1
    clockless = ("published_at", "latency_ms", "speech_start", "speech_end", "boot_id", "device_id")
    assert [{k: v for k, v in e.items() if k not in clockless} for e in events] == \
        [{k: v for k, v in e.items() if k not in clockless} for e in golden.payloads]
    strings = [e for e in events if e["event_type"] == "sequence"]
    assert [(s["digits"], s["digit_seqs"]) for s in strings] == [("4277", [1, 2, 3, 4]), ("09", [5, 6])]
    for e in events:
        if e["event_type"] != "sequence":
            assert e["latency_ms"] == e["published_at"] - e["speech_end"]


def test_the_daemon_publishes_digits_then_each_string(broker, subscriber_factory, daemon_factory, golden, tmp_path):
    """``digitspot-edge run`` with the ctc-stream fixture: a subscriber receives each digit on
    ``<prefix>/digit`` and, after them, the string on ``<prefix>/sequence``; discovery offers the string
    entity and one device trigger per configured code; ``--print`` writes the same events."""
    sub = subscriber_factory(broker.host, broker.port, ["digitspot/e2e/#", "homeassistant/#"])
    daemon = daemon_factory(["--model", str(STREAM_MODEL), "--source", "file", "--input", tone_stream_wav(tmp_path),
                             "--print", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                             "--device-id", "e2e", "--trigger-codes", "4277,0042"])
    assert daemon.wait(timeout=60) == 0, daemon.stderr()

    def live(messages) -> list:
        return [m for m in messages if m.topic in ("digitspot/e2e/digit", "digitspot/e2e/sequence")]

    assert sub.wait_for(lambda ms: len(live(ms)) >= len(GOLDEN_EVENTS), timeout=10), daemon.stderr()
    received = live(sub.messages)
    assert [(m.topic.rsplit("/", 1)[1], m.json()["seq"]) for m in received] == [
        ("sequence" if kind == "sequence" else "digit", seq) for kind, seq in GOLDEN_EVENTS]
    check_daemon_events([m.json() for m in received], golden)
    assert [m.json() for m in received] == daemon.events()  # --print writes what MQTT carries
    assert not any(m.retain for m in received)

    discovery = {m.topic: m.json() for m in sub.messages if m.topic.startswith("homeassistant/") and m.payload}
    assert discovery["homeassistant/event/e2e/sequence/config"]["state_topic"] == "digitspot/e2e/sequence"
    assert discovery["homeassistant/device_automation/e2e/code_4277/config"]["payload"] == "4277"
    assert discovery["homeassistant/device_automation/e2e/code_0042/config"]["payload"] == "0042"
    assert "homeassistant/event/e2e/digit/config" in discovery
    log = daemon.stderr()
    assert "ctc-stream" in log and "6 digit(s) and 2 string(s) heard, 8 of 8 message(s) delivered" in log


def test_the_daemon_prints_digits_and_strings_without_mqtt(daemon_factory, golden, tmp_path):
    daemon = daemon_factory(["--model", str(STREAM_MODEL), "--source", "file", "--input", tone_stream_wav(tmp_path),
                             "--no-mqtt", "--print"])
    assert daemon.wait(timeout=60) == 0, daemon.stderr()
    check_daemon_events(daemon.events(), golden)
    assert "6 digit(s) and 2 string(s) heard (MQTT off)" in daemon.stderr()


def test_the_daemon_takes_the_string_gap_from_its_settings(daemon_factory, tmp_path):
    """--sequence-gap-ms over the card's 1200 ms: at 100 ms the runs of 4 and 2 (130 ms apart) are in two
    strings, those of 7 and 7 (80 ms) and of 0 and 9 (20 ms) in one."""
    daemon = daemon_factory(["--model", str(STREAM_MODEL), "--source", "file", "--input", tone_stream_wav(tmp_path),
                             "--no-mqtt", "--print", "--sequence-gap-ms", "100"])
    assert daemon.wait(timeout=60) == 0, daemon.stderr()
    assert [e["digits"] for e in daemon.events() if e["event_type"] == "sequence"] == ["4", "277", "09"]
    assert "a digit string ends after 100 ms without a digit (configured)" in daemon.stderr()

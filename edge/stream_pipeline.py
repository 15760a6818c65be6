"""The streaming path of the daemon for "ctc-stream" models: audio chunks in, digit and string events out.

One :class:`StreamPipeline` runs a whole input: each chunk (mono float32 at the model's rate, with the
wall clock of its last sample, as the sources deliver it) goes through

    activity gate -> :class:`~digitspot.edge.stream_model.OnnxStreamModel` (fixed window, one call per step)
    -> :class:`~digitspot.edge.ctc_decoder.GreedyCtcDecoder` -> :class:`~digitspot.edge.sequences.SequenceGrouper`

and every digit the decoder publishes becomes a :class:`~digitspot.edge.events.DigitEvent` (``seq``
counted from 1 per ``boot_id``), every closed string a :class:`~digitspot.edge.sequences.SequenceEvent`
(its own ``seq``, also from 1). Events go to the publisher (``publish_digit`` / ``publish_sequence``,
the interface of :class:`~digitspot.edge.mqtt_publisher.MqttPublisher`) in the order they happen, and
are returned to the caller, which prints and logs them. A string is always handed over after all its
digits, and before a digit that starts the next string, so a subscriber of both topics sees them in
that order too (the publisher keeps one ordered queue).

The end of a word is decided by the model (a CTC digit run ends), not by a voice-activity detector: the
:class:`ActivityGate` only saves CPU. While no audio in the model's window was louder than the gate's
threshold, model calls are skipped and their frames decided as blank (see
:class:`~digitspot.edge.stream_model.OnnxStreamModel`). :meth:`StreamPipeline.finish` ends the input:
the held audio is pushed, the model flushed with silence, the last digit run ended and the string in
progress closed.

Times: stream sample offsets are mapped to wall-clock time by an
:class:`~digitspot.edge.stream_model.AudioClock` fed with every chunk's arrival time, as the window
classifier's segmenter times its frames. A digit's ``speech_start``/``speech_end`` are the start and end
of its CTC run (the frames where the model heard the digit, which lie inside the spoken word), clamped
to the input; ``latency_ms`` is ``published_at - speech_end``: the model's lookahead, the wait for the
next step and the time the call took. ``early`` is always false: no end-of-speech rule is involved.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from digitspot.edge.audio_io import SILENCE_DBFS
from digitspot.edge.ctc_decoder import DigitHit, GreedyCtcDecoder
from digitspot.edge.events import DigitEvent, ScoredDigit, utc_ms
from digitspot.edge.sequences import (
    DEFAULT_MAX_DIGITS,
    DEFAULT_SEQUENCE_GAP_MS,
    DigitString,
    SequenceEvent,
    SequenceGrouper,
    build_sequence_event,
)
from digitspot.edge.stream_model import AudioClock, DecidedFrames, OnnxStreamModel

log = logging.getLogger("digitspot.stream")

__all__ = ["ActivityGate", "EventPublisher", "StreamEvent", "StreamPipeline", "StreamSettings"]

StreamEvent = DigitEvent | SequenceEvent

# The activity gate (see ActivityGate). Levels are frame mean squares in dBFS (a full-scale sine is -3).
ABS_ACTIVE_DBFS = SILENCE_DBFS  # nothing this quiet runs the model, whatever the floor (as the segmenter's onset)
FLOOR_MIN_DBFS = -90.0  # the floor never goes below this (digital silence)
FLOOR_WINDOW_S = 2.0  # the floor is the quietest frame of this much recent audio
FLOOR_BLOCK_S = 0.1  # ... kept as the minima of blocks this long


class EventPublisher(Protocol):
    """Where events go: :class:`~digitspot.edge.mqtt_publisher.MqttPublisher` (one ordered queue for both
    topics) or a test's recorder. Called from the audio thread; must not block."""

    def publish_digit(self, payload: str, seq: int) -> None: ...

    def publish_sequence(self, payload: str, seq: int) -> None: ...


class ActivityGate:
    """Marks audio that may hold a word, so that the model is not run on silence (CPU only).

    Per frame of ``frame_samples`` on the stream's grid (the model's frame hop, so every model step
    ends on a gate frame and holding back a partial frame never delays a call), the frame is active
    when its mean square (DC removed) is more than ``onset_db`` above the noise floor and above
    -65 dBFS. The floor is the quietest frame of the last two seconds (minimum statistics): it follows
    steady noise up and down within two seconds, and speech, which always has quieter moments between
    and inside words, does not raise it. Until two seconds have been measured the floor is -90 dBFS, so
    a word at the very start of the input is not missed.

    A mistake here costs CPU or, at worst, frames decided as blank: the model reads a window of audio
    around every active frame (:class:`~digitspot.edge.stream_model.OnnxStreamModel` runs while any audio
    of its window was active), so quiet edges of a word are heard with the loud part. The threshold is
    deliberately lower than the segmenter's onset (minimum instead of median floor, no voicing check):
    the model, not the gate, tells digits from noise.
    """

    def __init__(self, frame_samples: int, sample_rate: int, onset_db: float):
        if frame_samples <= 0:
            raise ValueError(f"frame_samples {frame_samples} is not positive")
        self.frame = frame_samples
        self.onset_db = float(onset_db)
        self._pending = np.zeros(0, dtype=np.float32)
        block_frames = max(1, round(FLOOR_BLOCK_S * sample_rate / frame_samples))
        blocks = max(1, round(FLOOR_WINDOW_S / FLOOR_BLOCK_S))
        self._block_frames = block_frames
        self._block_min = math.inf
        self._block_count = 0
        # minima of the last `blocks` whole blocks; seeded with the lowest floor (see the class docstring)
        self._blocks: collections.deque[float] = collections.deque([FLOOR_MIN_DBFS] * blocks, maxlen=blocks)
        self.frames = 0
        self.active_frames = 0

    @property
    def floor_db(self) -> float:
        return max(FLOOR_MIN_DBFS, min(min(self._blocks), self._block_min))

    @property
    def held(self) -> int:
        """Samples held back until their frame is complete."""
        return len(self._pending)

    def level_db(self, frame: np.ndarray) -> float:
        x = frame.astype(np.float64)
        return 10.0 * math.log10(float(np.mean((x - x.mean()) ** 2)) + 1e-10)

    def _judge(self, frame: np.ndarray, measure: bool = True) -> bool:
        db = self.level_db(frame)
        active = db > max(self.floor_db + self.onset_db, ABS_ACTIVE_DBFS)
        if measure:
            self.frames += 1
            self.active_frames += active
            self._block_min = min(self._block_min, db)
            self._block_count += 1
            if self._block_count == self._block_frames:
                self._blocks.append(self._block_min)
                self._block_min, self._block_count = math.inf, 0
        return active

    def split(self, samples: np.ndarray) -> Iterator[tuple[np.ndarray, bool]]:
        """The complete frames of ``samples`` (after the ones held from before) as runs of equal activity;
        a partial frame at the end is held for the next call."""
        buf = np.concatenate((self._pending, samples)) if self._pending.size else samples
        n = len(buf) // self.frame
        self._pending = buf[n * self.frame:].copy()
        run_start, run_active = 0, False
        for i in range(n):
            active = self._judge(buf[i * self.frame:(i + 1) * self.frame])
            if i == 0:
                run_active = active
            elif active != run_active:
                yield buf[run_start * self.frame:i * self.frame], run_active
                run_start, run_active = i, active
        if n:
            yield buf[run_start * self.frame:n * self.frame], run_active

    def rest(self) -> tuple[np.ndarray, bool]:
        """End of input: the held partial frame, judged on what there is of it."""
        rest, self._pending = self._pending, np.zeros(0, dtype=np.float32)
        return rest, bool(rest.size) and self._judge(rest, measure=False)


@dataclass(frozen=True)
class StreamSettings:
    """What one streaming run is told (the daemon fills it from its configuration and the model card).

    Fields:
        device_id / boot_id: copied into every event.
        min_confidence: a digit run whose peak posterior is below this is not published (0-1).
        sequence_gap_ms: decided audio (ms) after a string's last digit with no new digit that ends it.
        onset_db: the activity gate's threshold above the noise floor (dB); see :class:`ActivityGate`.
        gate: False runs the model on every step, active or not.
        max_digits: a string this long is closed and the next digit starts a new one.
    """

    device_id: str
    boot_id: str
    min_confidence: float
    sequence_gap_ms: int = DEFAULT_SEQUENCE_GAP_MS
    onset_db: float = 9.0
    gate: bool = True
    max_digits: int = DEFAULT_MAX_DIGITS

    @classmethod
    def for_model(cls, model: OnnxStreamModel, *, device_id: str, boot_id: str, min_confidence: float | None = None,
                  sequence_gap_ms: int | None = None, **kw) -> StreamSettings:
        """Settings where ``None`` means the model card's value (``thresholds.min_confidence``,
        ``thresholds.sequence_gap_ms``; a card without a gap gets the default, 1200 ms)."""
        if min_confidence is None:
            min_confidence = model.thresholds.min_confidence
        if sequence_gap_ms is None:
            sequence_gap_ms = model.card_sequence_gap_ms or DEFAULT_SEQUENCE_GAP_MS
        return cls(device_id=device_id, boot_id=boot_id, min_confidence=min_confidence,
                   sequence_gap_ms=sequence_gap_ms, **kw)


class StreamPipeline:
    """Runs one input through a ctc-stream model; see the module docstring.

    ``publisher`` receives every event's JSON in order (None: events are only returned, as with
    ``--no-mqtt``). ``now`` is the wall clock that stamps ``published_at`` (``time.time``; a test passes
    its own to get exact values).
    """

    def __init__(self, model: OnnxStreamModel, settings: StreamSettings, publisher: EventPublisher | None = None,
                 now: Callable[[], float] = time.time):
        self.model = model
        self.settings = settings
        self.publisher = publisher
        self.now = now
        self.rate = model.sample_rate
        spec = model.spec
        model.reset()
        self.decoder = GreedyCtcDecoder(model.labels, settings.min_confidence)
        self.grouper = SequenceGrouper(self.rate, settings.sequence_gap_ms, settings.max_digits)
        self.gate = ActivityGate(spec.frame_hop_samples, self.rate, settings.onset_db) if settings.gate else None
        self.clock = AudioClock(self.rate)
        self.digit_seq = 0  # seq of the last digit event (digit events count from 1 per boot_id)
        self.sequence_seq = 0  # seq of the last sequence event (counted separately)
        self.finished = False
        self._decided_at: int | None = None  # stream position of the last model call (or skipped call)
        self._last_active: int | None = None  # model position at the end of the last active audio
        # A call's window holds window_samples of audio: after this much inactive audio the model idles.
        self._idle_after = spec.window_samples + spec.step_samples

    # -- state -----------------------------------------------------------------------------------
    @property
    def in_speech(self) -> bool:
        """The model is running (some audio of its window was active): the caller should hand on every
        chunk the moment it arrives. Otherwise it may gather audio (the gate's next active frame will
        still be decided with the whole window around it)."""
        return self._last_active is not None and self.model.position - self._last_active < self._idle_after

    @property
    def pending_digits(self) -> str:
        """Digits of the string in progress (published as digit events; the string not yet)."""
        return self.grouper.pending

    # -- input -----------------------------------------------------------------------------------
    def push(self, samples: np.ndarray, received_at: float) -> list[StreamEvent]:
        """Consume a chunk (mono float32 at the model's rate); ``received_at`` is the wall clock
        (``time.time()``) of its last sample. Returns the events it decided, in the order published."""
        if self.finished:
            raise RuntimeError("the input was finished: make a new StreamPipeline for a new input")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.clock.advance(len(samples), received_at)
        out: list[StreamEvent] = []
        if self.gate is None:
            self._feed(samples, True, out)
        else:
            for piece, active in self.gate.split(samples):
                self._feed(piece, active, out)
        return out

    def finish(self) -> list[StreamEvent]:
        """End of input: decide everything still open (see the module docstring). Idempotent."""
        if self.finished:
            return []
        self.finished = True
        out: list[StreamEvent] = []
        if self.gate is not None:
            rest, active = self.gate.rest()
            self._feed(rest, active, out)
        for batch in self.model.flush():
            self._decode(batch, out)
        hit = self.decoder.finish(self._decided_at)
        if hit is not None:
            self._digit(hit, out)
        for string in self.grouper.finish():
            self._sequence(string, out)
        return out

    # -- decoding --------------------------------------------------------------------------------
    def _feed(self, samples: np.ndarray, active: bool, out: list[StreamEvent]) -> None:
        if not samples.size:
            return
        for batch in self.model.push(samples, active=active):
            self._decode(batch, out)
        if active:
            self._last_active = self.model.position

    def _decode(self, batch: DecidedFrames, out: list[StreamEvent]) -> None:
        self._decided_at = batch.decided_at
        for hit in self.decoder.push(batch):
            self._digit(hit, out)
        for string in self.grouper.advance(self.decoder.decided_until, self.decoder.open_digit_start):
            self._sequence(string, out)

    def _clamped(self, hit: DigitHit) -> DigitHit:
        """The hit with its samples inside the input: a frame at an edge reaches into the silence before
        the input or the silence a flush feeds after it."""
        end = self.clock.position
        start, stop, peak = (min(max(s, 0), end) for s in (hit.start_sample, hit.end_sample, hit.peak_sample))
        if (start, stop, peak) == (hit.start_sample, hit.end_sample, hit.peak_sample):
            return hit
        return dataclasses.replace(hit, start_sample=start, end_sample=stop, peak_sample=peak)

    def _digit(self, hit: DigitHit, out: list[StreamEvent]) -> None:
        hit = self._clamped(hit)
        seq = self.digit_seq + 1
        closed = self.grouper.add(hit, digit_seq=seq)
        # A string closed by this digit's distance from it came before it; one closed by its length holds it.
        for string in closed:
            if seq not in string.digit_seqs:
                self._sequence(string, out)
        self.digit_seq = seq
        s = self.settings
        card = self.model.card
        published_at = utc_ms(self.now())
        speech_end = utc_ms(self.clock.wall_time(hit.end_sample))
        event = DigitEvent(
            device_id=s.device_id, digit=hit.digit, confidence=hit.confidence,
            top3=[ScoredDigit(digit, score) for digit, score in hit.top3],
            speech_start=utc_ms(self.clock.wall_time(hit.start_sample)), speech_end=speech_end,
            published_at=published_at, latency_ms=published_at - speech_end, seq=seq, boot_id=s.boot_id,
            model_name=card.name, model_sha256=card.sha256, audio_start_ms=hit.start_sample * 1000 // self.rate,
            audio_end_ms=hit.end_sample * 1000 // self.rate, early=False,
        )
        if self.publisher is not None:
            self.publisher.publish_digit(event.to_json(), seq)
        out.append(event)
        for string in closed:
            if seq in string.digit_seqs:
                self._sequence(string, out)

    def _sequence(self, string: DigitString, out: list[StreamEvent]) -> None:
        self.sequence_seq += 1
        s = self.settings
        card = self.model.card
        event = build_sequence_event(
            string, device_id=s.device_id, boot_id=s.boot_id, seq=self.sequence_seq, sample_rate=self.rate,
            wall_time=self.clock.wall_time, gap_ms=s.sequence_gap_ms, model_name=card.name,
            model_sha256=card.sha256, published_at=utc_ms(self.now()),
        )
        if self.publisher is not None:
            self.publisher.publish_sequence(event.to_json(), self.sequence_seq)
        out.append(event)

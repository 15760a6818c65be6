"""The reference for streaming CTC decoding: what the daemon does with a frame model, in numpy and onnxruntime.

This module is the specification the edge implementation is checked against; it is small on purpose
and imports no torch. The daemon:

1. keeps the last ``window_samples`` of audio (zeros before the stream starts) and calls the model every
   ``step_samples`` of new audio;
2. of each call's frames keeps those whose end (``j * frame_hop + frame_length``, in window samples)
   lies in ``[window - step - lookahead, window - lookahead)``: every frame is decided exactly once, with
   ``lookahead_samples`` of audio after it (``step`` must be a multiple of ``frame_hop``);
3. feeds the decided frames, in order, to a greedy CTC decoder: argmax per frame; a run of one digit
   label ends when the argmax changes; the digit is published at that moment if its peak posterior
   (softmax over all labels) reached ``min_confidence``; blank and filler are never published; two
   identical digits in a row need another label between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BLANK = 0
FILLER = 11
DIGIT_LABELS = range(1, 11)  # label i is the digit i - 1


@dataclass(frozen=True)
class StreamSettings:
    """The card's streaming fields plus the operating threshold."""

    window_samples: int = 8000
    step_samples: int = 800
    lookahead_samples: int = 640
    frame_hop_samples: int = 160
    frame_length_samples: int = 336
    min_confidence: float = 0.5
    sample_rate: int = 8000

    def __post_init__(self):
        if self.step_samples % self.frame_hop_samples:
            raise ValueError(f"step_samples {self.step_samples} is not a multiple of frame_hop_samples "
                             f"{self.frame_hop_samples}: some frames would be decided twice or never")
        if self.step_samples + self.lookahead_samples + self.frame_length_samples > self.window_samples:
            raise ValueError("step + lookahead + frame length exceed the window: no frame can be decided")

    def decided_frames(self) -> range:
        """Indices of the frames of one call that the daemon keeps."""
        w, hop, length = self.window_samples, self.frame_hop_samples, self.frame_length_samples
        first_end, stop_end = w - self.step_samples - self.lookahead_samples, w - self.lookahead_samples
        lo = -(-(first_end - length) // hop)
        hi = -(-(stop_end - length) // hop)
        return range(max(0, lo), hi)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Emission:
    """A published digit. Times are stream samples: ``frame_end`` of the run's peak frame, ``published_at``
    the stream position (the end of the audio the deciding call had) when the run ended."""

    digit: int
    confidence: float
    frame_end: int
    published_at: int


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class GreedyCtcDecoder:
    """Frame-synchronous greedy CTC with a confidence threshold on each digit run."""

    def __init__(self, min_confidence: float):
        self.min_confidence = min_confidence
        self.label = BLANK
        self.peak = 0.0
        self.peak_end = 0

    def push(self, posteriors: np.ndarray, frame_end: int, now: int) -> Emission | None:
        """One decided frame (posteriors over all labels); returns the digit whose run this frame ends."""
        label = int(np.argmax(posteriors))
        p = float(posteriors[label])
        if label == self.label:
            if p > self.peak:
                self.peak, self.peak_end = p, frame_end
            return None
        out = self._end_run(now)
        self.label, self.peak, self.peak_end = label, p, frame_end
        return out

    def flush(self, now: int) -> Emission | None:
        """End the current run (the stream stopped)."""
        out = self._end_run(now)
        self.label, self.peak = BLANK, 0.0
        return out

    def _end_run(self, now: int) -> Emission | None:
        if self.label in DIGIT_LABELS and self.peak >= self.min_confidence:
            return Emission(self.label - 1, self.peak, self.peak_end, now)
        return None


def greedy_decode(posteriors: np.ndarray, min_confidence: float = 0.0) -> list[int]:
    """Digits of one utterance's frame posteriors [n_frames, n_labels], decoded as the daemon does."""
    dec = GreedyCtcDecoder(min_confidence)
    out = [dec.push(p, i, i) for i, p in enumerate(posteriors)] + [dec.flush(len(posteriors))]
    return [e.digit for e in out if e is not None]


class OnnxFrameModel:
    """An exported frame model: float32 audio [batch, window] -> logits [batch, n_frames, n_labels]."""

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: np.ascontiguousarray(windows, dtype=np.float32)})[0]


def call_positions(n_samples: int, settings: StreamSettings) -> np.ndarray:
    """Stream positions (samples of audio received) at which the daemon calls the model: every step, until
    every frame that ends within the audio has been decided."""
    last = n_samples + settings.lookahead_samples + settings.step_samples
    return np.arange(settings.step_samples, last + 1, settings.step_samples)


def windows_at(audio: np.ndarray, positions: np.ndarray, window: int) -> np.ndarray:
    """The window each call sees: the last ``window`` samples before each position, zeros before the
    stream's start and after its end (the flush)."""
    padded = np.concatenate([np.zeros(window, np.float32), audio.astype(np.float32),
                             np.zeros(int(positions[-1]) - len(audio) + 1, np.float32)])
    return np.stack([padded[p:p + window] for p in positions])


def stream_decode(model, audio: np.ndarray, settings: StreamSettings, batch: int = 64) -> list[Emission]:
    """Run ``audio`` through the daemon's loop and return the published digits in order.

    The calls are independent (each sees only its window), so they are computed in batches; the decoder
    then consumes the decided frames in stream order, exactly as the daemon would call by call."""
    positions = call_positions(len(audio), settings)
    windows = windows_at(audio, positions, settings.window_samples)
    logits = np.concatenate([model(windows[i:i + batch]) for i in range(0, len(windows), batch)])
    kept = settings.decided_frames()
    dec = GreedyCtcDecoder(settings.min_confidence)
    out: list[Emission] = []
    w, hop, length = settings.window_samples, settings.frame_hop_samples, settings.frame_length_samples
    for pos, call in zip(positions, logits):
        post = softmax(call[kept.start:kept.stop])
        for j, p in zip(kept, post):
            e = dec.push(p, int(pos) - w + j * hop + length, int(pos))
            if e is not None:
                out.append(e)
    e = dec.flush(int(positions[-1]))
    if e is not None:
        out.append(e)
    return out

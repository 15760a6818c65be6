"""Streaming inference with a "ctc-stream" frame model: fixed window in, decided frames out.

A ctc-stream model maps a fixed window of raw audio (``float32 [batch, window_samples]``, front end in the
graph) to per-frame logits over its labels (``[batch, n_frames, n_labels]``); frame ``j`` of a window
covers window samples ``[j * frame_hop, j * frame_hop + frame_length)``. :class:`OnnxStreamModel` keeps
the last ``window_samples`` of the stream (zeros before it starts) and calls the model once per
``step_samples`` of new audio. Of each call it keeps the frames that end in
``[window - step - lookahead, window - lookahead)``: every frame of the stream is decided exactly once,
with ``lookahead_samples`` of audio after it and the rest of the window before it, and the cost of a call
is that of one fixed window however long anyone talks.

Frames are numbered on the stream's own grid: frame ``k`` covers stream samples
``[k * frame_hop, k * frame_hop + frame_length)``. The frames of a stream of ``n`` samples are those that
hold any of it (end after sample 0, start before sample ``n``); a frame at the very start may begin in
the zeros before the stream. :meth:`OnnxStreamModel.flush` decides the last ones by feeding silence.

``push(..., active=False)`` lets the caller's voice-activity check save CPU: while no audio in the window
was marked active, a call is skipped and its frames are decided as blank without running the model.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitspot.edge.card import ModelCard, Thresholds, load_card
from digitspot.edge.classifier import softmax
from digitspot.edge.errors import ModelError
from digitspot.edge.onnx_session import open_session

log = logging.getLogger("digitspot.stream")

MODEL_KIND = "ctc-stream"
BLANK_LABEL = "blank"
DIGIT_NAMES = tuple(str(d) for d in range(10))

__all__ = ["MODEL_KIND", "AudioClock", "DecidedFrames", "OnnxStreamModel", "StreamSpec", "frames_of"]


@dataclass(frozen=True)
class StreamSpec:
    """The card fields a streaming model is served by (flat keys of the model card).

    Fields (all in samples at the card's ``sample_rate``):
        labels: output index -> label: ``"blank"``, the digits ``"0"``..``"9"`` (``"oh"`` is ``"0"``), and
            labels the decoder never publishes (``"filler"``: any non-digit sound or speech).
        frame_hop_samples: distance between the starts of consecutive output frames.
        frame_length_samples: the stretch of audio one output frame stands for.
        window_samples: audio per model call; the model sees exactly this much every time.
        step_samples: new audio between calls; each call decides ``step / hop`` frames.
        lookahead_samples: audio after a frame's end that the model reads before the frame is decided
            (the model's right context); it adds directly to the latency of every digit.
    """

    labels: tuple[str, ...]
    frame_hop_samples: int
    frame_length_samples: int
    window_samples: int
    step_samples: int
    lookahead_samples: int

    @classmethod
    def from_dict(cls, data: Any) -> StreamSpec:
        """Read the streaming fields of a card (a JSON object; other keys are ignored)."""
        if not isinstance(data, dict):
            raise ModelError("model card is not a JSON object: re-export the model with digitspot-train export")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data]
        if missing:
            raise ModelError(f"model card has no {', '.join(missing)}: a {MODEL_KIND} model needs them; "
                             "re-export the model with digitspot-train export")
        labels = data["labels"]
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ModelError(f"model card labels = {labels!r} is not a list of strings: re-export the model")
        values: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            if f.name == "labels":
                continue
            value = data[f.name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ModelError(f"model card {f.name} = {value!r} is not a whole number of samples: "
                                 "re-export the model")
            values[f.name] = value
        spec = cls(labels=tuple(labels), **values)
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        return data

    def validate(self) -> None:
        """Refuse a spec the streaming loop cannot serve exactly (each frame decided once, inside the window)."""
        def bad(why: str) -> ModelError:
            return ModelError(f"model card streaming fields are inconsistent: {why}; re-export the model")

        for name in ("frame_hop_samples", "frame_length_samples", "window_samples", "step_samples"):
            if getattr(self, name) <= 0:
                raise bad(f"{name} = {getattr(self, name)} is not positive")
        if self.lookahead_samples < 0:
            raise bad(f"lookahead_samples = {self.lookahead_samples} is negative")
        hop = self.frame_hop_samples
        if self.step_samples % hop:
            raise bad(f"step_samples {self.step_samples} is not a multiple of frame_hop_samples {hop} "
                      "(some frames would be decided twice or never)")
        if self.window_samples % hop:
            raise bad(f"window_samples {self.window_samples} is not a multiple of frame_hop_samples {hop} "
                      "(the frames of successive calls would not line up)")
        if self.step_samples + self.lookahead_samples + self.frame_length_samples > self.window_samples:
            raise bad(f"step + lookahead + frame length ({self.step_samples} + {self.lookahead_samples} + "
                      f"{self.frame_length_samples}) exceed window_samples {self.window_samples}")
        if len(set(self.labels)) != len(self.labels):
            raise bad(f"labels {list(self.labels)} repeat a label")
        absent = [name for name in (BLANK_LABEL, *DIGIT_NAMES) if name not in self.labels]
        if absent:
            raise bad(f"labels {list(self.labels)} lack {absent}")

    @property
    def frames_per_step(self) -> int:
        return self.step_samples // self.frame_hop_samples

    def decided_window_frames(self) -> range:
        """Indices ``j`` (within one call's window) of the frames a call decides: those ending in
        ``[window - step - lookahead, window - lookahead)``."""
        hop, length = self.frame_hop_samples, self.frame_length_samples
        first_end = self.window_samples - self.step_samples - self.lookahead_samples
        lo = -(-(first_end - length) // hop)
        return range(lo, lo + self.frames_per_step)

    @property
    def blank_index(self) -> int:
        return self.labels.index(BLANK_LABEL)


@dataclass(frozen=True)
class DecidedFrames:
    """Consecutive frames decided by one model call (or one skipped call).

    Frame ``first_index + i`` covers stream samples ``[start_samples[i], end_samples[i])``;
    ``posteriors[i]`` is its softmax over the model's labels. ``decided_at`` is the stream position
    (samples received, counting the silence fed by a flush) when the call ran. ``skipped`` calls did not
    run the model: no audio in their window was active, and their frames are blank with probability 1.
    """

    first_index: int
    posteriors: np.ndarray  # float32 [n, n_labels]
    frame_hop_samples: int
    frame_length_samples: int
    decided_at: int
    skipped: bool = False

    def __len__(self) -> int:
        return int(self.posteriors.shape[0])

    @property
    def indices(self) -> range:
        return range(self.first_index, self.first_index + len(self))

    @property
    def start_samples(self) -> np.ndarray:
        return np.arange(self.first_index, self.first_index + len(self), dtype=np.int64) * self.frame_hop_samples

    @property
    def end_samples(self) -> np.ndarray:
        return self.start_samples + self.frame_length_samples

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start_sample, end_sample, posteriors)`` per frame, in order."""
        for i in range(len(self)):
            start = (self.first_index + i) * self.frame_hop_samples
            yield start, start + self.frame_length_samples, self.posteriors[i]


class OnnxStreamModel:
    """Runs a ctc-stream model over a stream: push audio, get every frame's posteriors exactly once.

    ``threads`` sets onnxruntime's thread counts as :class:`~digitspot.edge.classifier.OnnxDigitClassifier`
    does (one intra-op thread, sequential, no spinning): the model shares a Pi's small cores with the
    audio loop. At load the model is run once on silence to check that it returns the frames the card
    promises.
    """

    def __init__(self, model_path: str | os.PathLike[str], threads: int = 1, verify: bool = True):

        self.model_path = Path(model_path)
        self.card: ModelCard = load_card(self.model_path, verify=verify)
        kind = self.card.model_kind
        if kind != MODEL_KIND:
            raise ModelError(f"{self.model_path} is a {kind!r} model, not a {MODEL_KIND!r} one: "
                             "pass a streaming model exported by digitspot-train")
        self.spec = StreamSpec.from_dict(self.card.to_dict())  # load_card has checked these fields
        self.card_sequence_gap_ms = self.card.thresholds.sequence_gap_ms
        self.session = open_session(self.model_path, threads)
        names = [i.name for i in self.session.get_inputs()]
        if self.card.input_name not in names:
            raise ModelError(f"{self.model_path}: model has inputs {names}, its card says "
                             f"{self.card.input_name!r}; model and card do not belong together")
        self._check_output_shape()
        self.calls = 0  # model calls run
        self.skipped_calls = 0  # calls not run because no audio in the window was active
        self.nonfinite_frames = 0  # frames whose logits were not finite (decided as blank)
        self.reset()

    # -- properties ----------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.card.sample_rate

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def thresholds(self) -> Thresholds:
        """The confidences the model's card recommends (``min_confidence`` is the decoder's threshold)."""
        return self.card.thresholds

    @property
    def position(self) -> int:
        """Stream samples pushed so far (the silence of a flush not counted)."""
        return self._received

    # -- model ---------------------------------------------------------------------------------------
    def _run(self, window: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.card.output_name], {self.card.input_name: window[None, :]})
        return np.asarray(out, dtype=np.float32)[0]

    def _check_output_shape(self) -> None:
        out = self._run(np.zeros(self.spec.window_samples, dtype=np.float32))
        need = self.spec.decided_window_frames().stop
        if out.ndim != 2 or out.shape[1] != len(self.spec.labels) or out.shape[0] < need:
            raise ModelError(f"{self.model_path}: one {self.spec.window_samples}-sample window gives logits of "
                             f"shape {list(out.shape)}; the card promises >= {need} frames x "
                             f"{len(self.spec.labels)} labels; model and card do not belong together")

    # -- streaming -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new stream: silent history, frame 0 at the next sample."""
        spec = self.spec
        self._window = np.zeros(spec.window_samples, dtype=np.float32)
        self._staging = np.zeros(spec.step_samples, dtype=np.float32)
        self._fill = 0  # samples waiting in _staging for the next call
        self._received = 0
        self._calls_at = 0  # stream position of the last call (a multiple of step)
        blocks = -(-spec.window_samples // spec.step_samples)
        self._active: collections.deque[bool] = collections.deque([False] * blocks, maxlen=blocks)
        self._step_active = False
        self._flushed = False
        hop, length = spec.frame_hop_samples, spec.frame_length_samples
        self._first_frame = (-length) // hop + 1  # the first frame that ends after sample 0
        self._next_frame = self._first_frame

    def push(self, samples: np.ndarray, active: bool = True) -> list[DecidedFrames]:
        """Consume mono float32 audio at the model's rate; return the frames this audio decided, in order
        (one entry per call that decided any frame of the stream). ``active=False`` marks the audio as
        holding no sound worth a model call (see the module docstring)."""
        if self._flushed:
            raise RuntimeError("the stream was flushed: call reset() before pushing a new stream")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        out: list[DecidedFrames] = []
        step = self.spec.step_samples
        pos = 0
        while pos < len(samples):
            take = min(step - self._fill, len(samples) - pos)
            self._staging[self._fill:self._fill + take] = samples[pos:pos + take]
            self._fill += take
            pos += take
            self._received += take
            self._step_active = self._step_active or active
            if self._fill == step:
                decided = self._advance_step(last_frame=None)
                if decided is not None:
                    out.append(decided)
        return out

    def flush(self) -> list[DecidedFrames]:
        """End of stream: feed silence until every frame holding stream audio is decided. The model is
        then done with this stream (``reset()`` starts another)."""
        if self._flushed:
            return []
        self._flushed = True
        out: list[DecidedFrames] = []
        if self._received == 0:
            return out
        hop = self.spec.frame_hop_samples
        last_frame = -(-self._received // hop) - 1  # the last frame starting before the end of the stream
        while self._next_frame <= last_frame:
            self._staging[self._fill:] = 0.0
            self._fill = self.spec.step_samples
            decided = self._advance_step(last_frame=last_frame)
            if decided is not None:
                out.append(decided)
        return out

    def _advance_step(self, last_frame: int | None) -> DecidedFrames | None:
        """One full step is staged: slide the window, decide this call's frames (running the model unless
        the window holds no active audio)."""
        spec = self.spec
        step, hop = spec.step_samples, spec.frame_hop_samples
        self._window[:-step] = self._window[step:]
        self._window[-step:] = self._staging
        self._fill = 0
        self._active.append(self._step_active)
        self._step_active = False
        self._calls_at += step
        window_first = (self._calls_at - spec.window_samples) // hop  # stream index of the window's frame 0
        decided = spec.decided_window_frames()
        first = window_first + decided.start
        stop = window_first + decided.stop
        if last_frame is not None:
            stop = min(stop, last_frame + 1)
        first = max(first, self._next_frame)
        if first >= stop:
            return None
        assert first == self._next_frame, "a frame would be skipped"
        self._next_frame = stop
        j0, j1 = first - window_first, stop - window_first
        if not any(self._active):
            self.skipped_calls += 1
            posteriors = np.zeros((j1 - j0, len(spec.labels)), dtype=np.float32)
            posteriors[:, spec.blank_index] = 1.0
            return DecidedFrames(first, posteriors, hop, spec.frame_length_samples, self._calls_at, skipped=True)
        self.calls += 1
        logits = self._run(self._window)[j0:j1]
        posteriors = softmax(logits.astype(np.float32))
        bad = ~np.isfinite(posteriors).all(axis=1)
        if bad.any():
            if self.nonfinite_frames == 0:
                log.warning("the model returned non-finite logits; such frames are decided as blank")
            self.nonfinite_frames += int(bad.sum())
            posteriors[bad] = 0.0
            posteriors[bad, spec.blank_index] = 1.0
        return DecidedFrames(first, posteriors, hop, spec.frame_length_samples, self._calls_at)


class AudioClock:
    """Maps stream sample offsets to wall-clock time (``time.time()`` seconds).

    The daemon calls :meth:`advance` with every chunk and the wall clock of its last sample; a sample's
    time is extrapolated back from the newest chunk at the sample rate, as the segmenter times its frames.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.position = 0
        self.received_at: float | None = None

    def advance(self, n_samples: int, received_at: float) -> None:
        self.position += int(n_samples)
        self.received_at = received_at

    def wall_time(self, sample: int) -> float:
        if self.received_at is None:
            raise RuntimeError("no audio yet: the clock has nothing to extrapolate from")
        return self.received_at - (self.position - sample) / self.sample_rate


def frames_of(decided: Sequence[DecidedFrames]) -> tuple[list[int], np.ndarray]:
    """All frame indices and posteriors of several :class:`DecidedFrames`, concatenated (for tests and
    offline evaluation)."""
    indices = [k for d in decided for k in d.indices]
    posteriors = np.concatenate([d.posteriors for d in decided]) if decided else np.zeros((0, 0), np.float32)
    return indices, posteriors

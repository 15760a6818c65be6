"""Streaming greedy CTC decoding: decided frames in, digits out the moment each one is certain.

Why greedy (best path, frame by frame): the label set is ten digits, blank and filler, with no language
model to combine, and a CTC model's posteriors are peaky, so the best path and a prefix beam search
agree almost always; greedy needs no lookahead beyond the model's own, costs O(1) per frame, and
publishes a digit as soon as its run of frames ends. It is also what the trainer evaluates
(``digitspot.train.stream_decode_reference``), so the operating point measured there holds here.

The rule: the label of a frame is its argmax. A run is a stretch of consecutive frames with the same
label; a run of a digit label ends at the first frame whose argmax differs, and the digit is published
then if its confidence reaches ``min_confidence``. Blank and filler runs are never published. Two
identical digits in a row therefore need another label (blank, filler, another digit) between their
runs, as in CTC. "oh" is simply the label ``"0"``.

Confidence is the digit's highest frame posterior within its run (softmax over all labels, so blank and
filler compete with it). It says how sure the model was at its most certain moment of the word; it is
not a calibrated probability that the word was that digit. The card's ``min_confidence`` is the
operating point the trainer chose on held-out talk (recall against false digits per hour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from digitspot.edge.stream_model import BLANK_LABEL, DecidedFrames

__all__ = ["DigitHit", "GreedyCtcDecoder"]


@dataclass(frozen=True)
class DigitHit:
    """One published digit. Times are stream sample offsets at the model's rate.

    Fields:
        digit: 0..9.
        confidence: the run's peak posterior of that digit, 0..1 (see the module docstring).
        start_sample / end_sample: start of the run's first frame, end of its last frame. A CTC digit
            run is short (often one or two frames somewhere in the word), so these bracket the model's
            evidence, not the whole word. At the edges of a stream a frame reaches into the silence
            around it: start_sample may be negative, end_sample past the last sample.
        peak_sample: end of the run's most confident frame.
        decided_sample: stream position when the run ended (the call that decided the next frame);
            ``decided_sample - end_sample`` is the audio-clock delay of the decision.
        top3: the three most probable digits at the peak frame with their posteriors, best first.
    """

    digit: int
    confidence: float
    start_sample: int
    end_sample: int
    peak_sample: int
    decided_sample: int
    top3: tuple[tuple[int, float], ...] = ()


class GreedyCtcDecoder:
    """Frame-synchronous greedy CTC over a model's labels, with a confidence threshold per digit run."""

    def __init__(self, labels: Sequence[str], min_confidence: float):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence {min_confidence} is not between 0 and 1")
        self.labels = tuple(labels)
        self.min_confidence = float(min_confidence)
        # label index -> digit, -1 for labels that are never published (blank, filler, ...)
        self.digit_of = np.array([int(label) if label in {str(d) for d in range(10)} else -1
                                  for label in self.labels], dtype=np.int64)
        self.digit_indices = np.flatnonzero(self.digit_of >= 0)
        self.blank = self.labels.index(BLANK_LABEL)
        self.frames = 0  # frames decoded
        self.decided_until: int | None = None  # end sample of the last frame decoded
        self._start_run(self.blank, 0, 0, 0.0, None)

    def _start_run(self, label: int, start: int, end: int, peak: float, posteriors: np.ndarray | None) -> None:
        self._label = label
        self._run_start = start
        self._run_end = end
        self._peak = peak
        self._peak_end = end
        self._peak_posteriors = posteriors

    @property
    def open_digit_start(self) -> int | None:
        """Start sample of the digit run in progress (its digit is not known to be published yet), or None."""
        return self._run_start if self.digit_of[self._label] >= 0 else None

    def push(self, frames: DecidedFrames) -> list[DigitHit]:
        """Decode one call's decided frames; return the digits whose runs they ended."""
        hits: list[DigitHit] = []
        for start, end, posteriors in frames:
            hit = self.push_frame(posteriors, start, end, frames.decided_at)
            if hit is not None:
                hits.append(hit)
        return hits

    def push_frame(self, posteriors: np.ndarray, start_sample: int, end_sample: int,
                   decided_sample: int) -> DigitHit | None:
        """One decided frame (posteriors over all labels); returns the digit whose run it ended, if any."""
        label = int(np.argmax(posteriors))
        p = float(posteriors[label])
        self.frames += 1
        self.decided_until = end_sample
        if label == self._label:
            self._run_end = end_sample
            if p > self._peak:
                self._peak, self._peak_end, self._peak_posteriors = p, end_sample, posteriors
            return None
        hit = self._end_run(decided_sample)
        self._start_run(label, start_sample, end_sample, p, posteriors)
        return hit

    def finish(self, decided_sample: int | None = None) -> DigitHit | None:
        """End of stream: end the run in progress (publishing its digit if confident enough)."""
        now = decided_sample if decided_sample is not None else (self.decided_until or 0)
        hit = self._end_run(now)
        end = self.decided_until or 0
        self._start_run(self.blank, end, end, 0.0, None)
        return hit

    def _end_run(self, decided_sample: int) -> DigitHit | None:
        digit = int(self.digit_of[self._label])
        if digit < 0 or not self._peak >= self.min_confidence or self._peak_posteriors is None:  # NaN: no
            return None
        post = self._peak_posteriors
        order = self.digit_indices[np.argsort(-post[self.digit_indices], kind="stable")][:3]
        top3 = tuple((int(self.digit_of[i]), float(post[i])) for i in order)
        return DigitHit(digit=digit, confidence=self._peak, start_sample=self._run_start, end_sample=self._run_end,
                        peak_sample=self._peak_end, decided_sample=decided_sample, top3=top3)

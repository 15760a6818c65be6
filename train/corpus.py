"""What the synthetic voices say, each text with the label sequence a CTC model learns from it.

Labels are digits 0-9 and ``FILLER`` (-1) for a run of non-digit speech: "the code is four two
seven" is ``[-1, 4, 2, 7]``, a household sentence is ``[-1]``. "oh" is a second way to say 0 and is
labelled 0 wherever it appears, so no non-digit text may contain it.

Texts come in kinds: ``digit`` (zero..nine), ``oh``, ``string`` (3-6 digits said as one phrase, as
people say PINs, door codes and phone numbers), ``word`` (single words from Debian's wamerican list),
``confusable`` (rhymes and one-phoneme neighbours of every digit, number words that are not single
digits, fragments of digits), ``sentence`` (household talk from templates, no number words) and
``mixed`` (a sentence that carries a digit string).

Every text has a deterministic ``text_split`` ("train" or "heldout") from a hash of its text (and, for
sentences, of its template), so measurement material is never trained on whatever else changes.
Single digit words cannot be held out by text: they are held out by voice (see ``voice_inventory``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitspot.edge.errors import EXIT_NOINPUT, DigitspotError

FILLER = -1
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
OH = "oh"
WORDLIST_PATH = Path("/usr/share/dict/words")
HELDOUT_PERCENT = 15

KINDS = ("digit", "oh", "string", "word", "confusable", "sentence", "mixed")
NEGATIVE_KINDS = ("word", "confusable", "sentence")

# Katakana readings give Kokoro's Japanese styles a Japanese-accented English (misaki's romaniser).
DIGIT_KANA = ("ゼロ", "ワン", "トゥー", "スリー", "フォー", "ファイブ", "シックス", "セブン", "エイト", "ナイン")
OH_KANA = "オー"

# Words spoken exactly like a digit ("won" = "one"). A model cannot tell them apart in isolation, so
# they carry ``homophone=True`` and the trainer decides whether to use them; they never appear inside
# sentences. "to" and "for" stay allowed in sentences: there they are unstressed (tə, fəɹ).
HOMOPHONES = {"won": 1, "to": 2, "too": 2, "fore": 4, "for": 4, "ate": 8, "nein": 9, "owe": 0, "sicks": 6}
SENTENCE_BANNED = {"won", "too", "fore", "ate", "nein", "owe", "sicks", "oh", "o"}

# Rhymes and one-phoneme neighbours, grouped by the digit they resemble.
NEIGHBOURS = {
    0: ["hero", "nero", "zebra", "zeal", "arrow", "zorro", "sierra", "xerox", "pharaoh", "zealot"],
    1: ["done", "fun", "gun", "run", "sun", "none", "wand", "wan", "when", "ton", "once", "wane", "swan"],
    2: ["do", "shoe", "new", "true", "tube", "tool", "tooth", "tomb", "chew", "toe", "tour", "stew"],
    3: ["tree", "free", "flee", "agree", "tea", "thee", "throw", "thread", "freeze", "spree", "through"],
    4: ["floor", "door", "more", "pour", "fork", "foe", "fur", "fair", "war", "sore", "core", "forth"],
    5: ["fine", "hive", "dive", "drive", "alive", "fife", "file", "fight", "vibe", "wife", "fie", "thrive"],
    6: ["sticks", "sick", "fix", "mix", "kicks", "sax", "socks", "seeks", "ticks", "sits", "slicks", "picks"],
    7: ["heaven", "leaven", "several", "sever", "savor", "session", "kevin", "evan", "devon", "sullen"],
    8: ["hate", "late", "gate", "weight", "wait", "date", "eat", "ace", "ache", "aid", "bait", "straight"],
    9: ["line", "mine", "wine", "pine", "night", "nice", "knife", "dine", "sign", "shine", "mind"],
}
OH_NEIGHBOURS = ["no", "go", "so", "low", "show", "whoa", "ow", "own", "okay", "old"]
NUMBER_WORDS = [
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand",
    "million", "billion", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "dozen", "twice", "half", "zillion",
]
# Parts of digits: what a cut-off or half-heard digit sounds like.
# Spelled so that espeak-ng reads them as one syllable (not as letters, not as a Roman numeral).
FRAGMENTS = ["sev", "seve", "ven", "zee", "zeh", "ro", "fo", "fy", "sik", "eigh", "nai", "wuh", "fiv", "thir",
             "sixt", "nin", "ei", "ive", "ree", "twuh"]
# wamerican lists Roman numerals ("xiv", "viii"), which synthesisers read as numbers.
ROMAN_NUMERAL = re.compile(r"(?=[mdclxvi]+$)m{0,4}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})")

CONFUSABLE_KANA = {
    "hero": "ヒーロー", "zebra": "ゼブラ", "nero": "ネロ", "tree": "ツリー", "free": "フリー", "fine": "ファイン",
    "sticks": "スティックス", "heaven": "ヘブン", "hate": "ヘイト", "gate": "ゲート", "ten": "テン",
    "twenty": "トゥエンティ", "seventy": "セブンティ", "hundred": "ハンドレッド", "thousand": "サウザンド",
    "first": "ファースト", "second": "セカンド", "eleven": "イレブン", "line": "ライン", "wine": "ワイン",
    "door": "ドア", "floor": "フロア", "more": "モア", "drive": "ドライブ", "nice": "ナイス", "mix": "ミックス",
    "fix": "フィックス", "sun": "サン", "run": "ラン", "fun": "ファン", "done": "ダン", "shoe": "シュー",
    "new": "ニュー", "true": "トゥルー", "tool": "ツール", "go": "ゴー", "no": "ノー", "so": "ソー",
    "show": "ショー", "late": "レイト", "date": "デート", "knife": "ナイフ", "night": "ナイト", "wife": "ワイフ",
    "hive": "ハイブ", "alive": "アライブ", "several": "セブラル", "okay": "オーケー", "won": "ウォン",
    "fifty": "フィフティ", "forty": "フォーティ", "sixty": "シックスティ", "eighty": "エイティ",
    "ninety": "ナインティ", "thirteen": "サーティーン", "sev": "セブ", "fiv": "ファイ", "nai": "ナイ",
    "sik": "シッ", "thr": "スリ",
}
WORD_KANA = {
    "kitchen": "キッチン", "light": "ライト", "coffee": "コーヒー", "table": "テーブル", "window": "ウィンドウ",
    "music": "ミュージック", "water": "ウォーター", "hello": "ハロー", "thanks": "サンクス", "please": "プリーズ",
    "dinner": "ディナー", "morning": "モーニング", "garden": "ガーデン", "weather": "ウェザー", "coat": "コート",
    "towel": "タオル", "kettle": "ケトル", "lunch": "ランチ", "movie": "ムービー", "bedroom": "ベッドルーム",
    "computer": "コンピューター", "shower": "シャワー", "cookie": "クッキー", "butter": "バター", "radio": "ラジオ",
}
SENTENCE_KANA = {
    "please turn off the kitchen light": "プリーズ ターン オフ ザ キッチン ライト",
    "what time is dinner": "ホワット タイム イズ ディナー",
    "i need a cup of coffee": "アイ ニード ア カップ オブ コーヒー",
    "can you open the window": "キャン ユー オープン ザ ウィンドウ",
    "the weather is very nice": "ザ ウェザー イズ ベリー ナイス",
    "let's watch a movie tonight": "レッツ ウォッチ ア ムービー トゥナイト",
    "don't forget your coat": "ドント フォーゲット ユア コート",
    "the kettle is boiling": "ザ ケトル イズ ボイリング",
    "where is my phone": "ウェア イズ マイ フォン",
    "thank you very much": "サンキュー ベリー マッチ",
}


@dataclass(frozen=True)
class Text:
    """One thing to say: its words, an optional katakana reading, its labels and where it belongs."""

    text: str
    labels: tuple[int, ...]
    kind: str
    text_split: str = "train"
    kana: str | None = None
    homophone: bool = False
    group: str = ""  # template or source the text came from (what a held-out template shares)

    def as_dict(self) -> dict:
        return {"text": self.text, "labels": list(self.labels), "kind": self.kind, "text_split": self.text_split,
                "kana": self.kana, "homophone": self.homophone, "group": self.group}


class CorpusError(DigitspotError):
    """The word list the negatives come from is missing."""

    exit_code = EXIT_NOINPUT


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (sha256), the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0 ** 64


def heldout_by_hash(key: str, percent: int = HELDOUT_PERCENT) -> bool:
    return stable_fraction("digitspot-heldout:" + key) < percent / 100.0


def text_split_of(text: str, group: str = "") -> str:
    """"heldout" if the text (or its template) hashes into the held-out share, else "train"."""
    if heldout_by_hash("text:" + normalise(text)) or (group and heldout_by_hash("group:" + group)):
        return "heldout"
    return "train"


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()


def words_of(text: str) -> list[str]:
    return normalise(text).split()


def labels_for(text: str) -> tuple[int, ...]:
    """Digit words (and "oh") map to their digits; each run of other words becomes one FILLER."""
    out: list[int] = []
    for word in words_of(text):
        if word in DIGIT_WORDS:
            out.append(DIGIT_WORDS.index(word))
        elif word == OH:
            out.append(0)
        elif not out or out[-1] != FILLER:
            out.append(FILLER)
    return tuple(out)


# --------------------------------------------------------------------------------------------- digits


def digit_texts() -> list[Text]:
    """zero..nine (kind ``digit``) and "oh" (kind ``oh``, label 0); all train by text."""
    out = [Text(word, (d,), "digit", kana=DIGIT_KANA[d], group="digit") for d, word in enumerate(DIGIT_WORDS)]
    out.append(Text(OH, (0,), "oh", kana=OH_KANA, group="digit"))
    return out


def _render_string(digits: list[int], rng: np.random.Generator) -> tuple[str, str]:
    """Words and katakana for a digit string: some zeros as "oh", phone-style groups with commas."""
    use_oh = bool(rng.random() < 0.5)
    words = [OH if (d == 0 and use_oh) else DIGIT_WORDS[d] for d in digits]
    kana = [OH_KANA if (d == 0 and use_oh) else DIGIT_KANA[d] for d in digits]
    style = rng.random()
    if len(digits) >= 5 and style < 0.35:  # phone style: 3 + rest, or 2 + 2 + 2
        cut = [3] if len(digits) == 5 else [2, 4]
        text = ", ".join(" ".join(words[a:b]) for a, b in zip([0, *cut], [*cut, len(words)]))
        kana_text = "、".join(" ".join(kana[a:b]) for a, b in zip([0, *cut], [*cut, len(kana)]))
        return text, kana_text
    return " ".join(words), " ".join(kana)


def string_texts(count: int = 6000, seed: int = 20240518) -> list[Text]:
    """``count`` distinct digit strings of 3-6 digits said as one phrase, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[Text] = []
    while len(out) < count:
        length = int(rng.integers(3, 7))
        digits = [int(d) for d in rng.integers(0, 10, size=length)]
        text, kana = _render_string(digits, rng)
        if text in seen:
            continue
        seen.add(text)
        out.append(Text(text, tuple(digits), "string", text_split_of(text), kana=kana, group=f"string{length}"))
    return out


# ------------------------------------------------------------------------------------------ negatives


def confusable_texts() -> list[Text]:
    """Homophones, neighbours of every digit and of "oh", number words, fragments; all labelled FILLER."""
    entries: dict[str, tuple[str, bool]] = {}
    for word in HOMOPHONES:
        entries[word] = ("homophone", True)
    for digit, words in NEIGHBOURS.items():
        for word in words:
            entries.setdefault(word, (f"neighbour{digit}", False))
    for word in OH_NEIGHBOURS:
        entries.setdefault(word, ("neighbour-oh", False))
    for word in NUMBER_WORDS:
        entries.setdefault(word, ("number-word", False))
    for word in FRAGMENTS:
        entries.setdefault(word, ("fragment", False))
    out = []
    for word, (group, homophone) in entries.items():
        kana = CONFUSABLE_KANA.get(word)
        out.append(Text(word, (FILLER,), "confusable", text_split_of(word), kana=kana, homophone=homophone,
                        group=group))
    return out


def _excluded_words() -> set[str]:
    excluded = set(DIGIT_WORDS) | {OH, "o"} | set(HOMOPHONES) | set(NUMBER_WORDS) | set(FRAGMENTS)
    for words in NEIGHBOURS.values():
        excluded.update(words)
    excluded.update(OH_NEIGHBOURS)
    return excluded


def load_wordlist(path: Path = WORDLIST_PATH) -> list[str]:
    """Plain lowercase words of 3-10 letters from wamerican, minus digits, homophones, confusables and
    Roman numerals."""
    if not path.is_file():
        raise CorpusError(f"{path} not found: install Debian's wamerican (apt-get install wamerican, or make sysdeps)")
    excluded = _excluded_words()
    words = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        word = line.strip()
        if re.fullmatch(r"[a-z]{3,10}", word) and word not in excluded and not ROMAN_NUMERAL.fullmatch(word):
            words.add(word)
    return sorted(words)


def word_texts(wordlist: list[str] | None = None) -> list[Text]:
    """Every usable wamerican word as a ``word`` text (labels ``[FILLER]``), plus the katakana words."""
    words = load_wordlist() if wordlist is None else wordlist
    out = [Text(w, (FILLER,), "word", text_split_of(w), group="wamerican") for w in words]
    kana_words = set(WORD_KANA)
    out = [Text(t.text, t.labels, t.kind, t.text_split, kana=WORD_KANA.get(t.text), group=t.group)
           if t.text in kana_words else t for t in out]
    known = {t.text for t in out}
    out += [Text(w, (FILLER,), "word", text_split_of(w), kana=k, group="household")
            for w, k in WORD_KANA.items() if w not in known]
    return out


# Household talk. Slots in braces; every expansion is checked against the number words.
SENTENCE_TEMPLATES: dict[str, list[str]] = {
    "lights": ["{please|could you|can you} turn {on|off} the {kitchen|bedroom|hallway|bathroom|porch} {light|lamp}"],
    "heating": ["{it is|it's} {really|a bit|very} {cold|warm|stuffy} in the {living room|kitchen|bedroom}"],
    "weather": ["what's the weather like {today|tomorrow|this afternoon|this weekend}",
                "{it looks like|i think} it's going to {rain|snow|be sunny} {later|tonight|this morning}"],
    "dinner": ["dinner is {almost ready|in the oven|on the table|getting cold}",
               "{can you|could you} set the table {please|now|before dinner}"],
    "recipe": ["{add|stir in|fold in} the {flour|sugar|butter|eggs|milk} {slowly|gently|and mix well}",
               "{preheat|check} the oven and {grease|line} the {tray|pan|dish}",
               "let the {sauce|soup|dough} {simmer|rest|cool} for a while"],
    "pets": ["did you {feed|walk|brush} the {dog|cat|puppy}", "the {dog|cat} is {asleep|hungry|outside} again"],
    "shopping": ["we need {milk|bread|coffee|apples|rice|cheese} and {butter|tea|onions|pasta|soap}",
                 "{don't forget|remember} to buy {toothpaste|batteries|bin bags|flowers}"],
    "whereabouts": ["where did you put my {keys|glasses|phone|wallet|umbrella|charger}",
                    "{i|we} left the {keys|bag|jacket} {in the car|by the door|upstairs|on the sofa}"],
    "tv": ["{turn|switch} {up|down} the {volume|music|radio|television} {please|a little}",
           "what do you want to watch {tonight|later|after dinner}",
           "the {match|film|show|news} starts {soon|after the news|in a minute}"],
    "chores": ["{can you|could you|please} {empty|load|unload} the {dishwasher|washing machine|dryer}",
               "the {bins|recycling} go out {tonight|tomorrow morning|on monday}",
               "{i'll|let me} {vacuum|tidy|dust} the {stairs|living room|bedroom} {later|now|after lunch}"],
    "family": ["{mum|dad|grandma|grandpa} is coming {over|round} {tomorrow|on sunday|for lunch}",
               "{have you|did you} {called|phoned|texted} {your sister|your brother|the neighbours} yet",
               "{the kids|the children} are {playing|asleep|doing homework} {upstairs|in the garden|outside}"],
    "questions": ["{what time|when} does the {shop|pharmacy|library|bakery} {open|close}",
                  "{is|was} there any {coffee|tea|juice|soup} left", "who left the {door|window|fridge} open"],
    "chat": ["{i'm|we're} {really|so|quite} {tired|hungry|happy|busy} {today|tonight|this week}",
             "{that|this} {sounds|looks|tastes} {great|lovely|terrible|delicious}",
             "{thank you|thanks} {so much|a lot|again} for {dinner|the flowers|your help|the lift}",
             "{i don't know|i'm not sure|maybe} {where|when|why} {she|he|they} went"],
    "reading": ["{the story|the chapter|the article} {begins|ends} with a {storm|wedding|letter|journey}",
                "{she|he} opened the {letter|parcel|box} and {smiled|laughed|sighed} {quietly|softly|at last}"],
    "garden": ["the {roses|tomatoes|beans|plants} need {water|sunlight|pruning} {today|badly|again}",
               "{mow|water|weed} the {lawn|garden|flower beds} {before it rains|this evening|later}"],
}
# Carriers around a digit string, as a person says a code in a sentence: (prefix, suffix).
MIXED_CARRIERS = [
    ("the code is", ""), ("my pin is", ""), ("the door code is", ""), ("call me on", ""), ("the order number is", ""),
    ("", "is the code"), ("it's", ""), ("dial", "please"), ("my room is", ""), ("extension", "please"),
    ("the number is", "thanks"), ("press", "then enter"), ("the gate code is", "okay"), ("try", "instead"),
    ("the alarm code is", ""), ("my postcode ends in", ""), ("ticket", "is mine"), ("send it to locker", ""),
]
MIXED_KANA = [("ザ コード イズ", ""), ("マイ ピン イズ", ""), ("コール ミー オン", "")]


def _expand(template: str) -> list[str]:
    parts = re.split(r"(\{[^}]*\})", template)
    options = [p[1:-1].split("|") if p.startswith("{") else [p] for p in parts]
    return [re.sub(r"\s+", " ", "".join(choice)).strip() for choice in itertools.product(*options)]


def _check_no_numbers(text: str) -> None:
    bad = set(words_of(text)) & (set(DIGIT_WORDS) | set(NUMBER_WORDS) | SENTENCE_BANNED)
    if bad:
        raise ValueError(f"sentence template gives {text!r}, which says {sorted(bad)}: reword the template")


def sentence_texts() -> list[Text]:
    """Every expansion of the household templates (kind ``sentence``, labels ``[FILLER]``), sorted."""
    out = []
    for group, templates in SENTENCE_TEMPLATES.items():
        for ti, template in enumerate(templates):
            key = f"{group}{ti}"
            for text in _expand(template):
                _check_no_numbers(text)
                out.append(Text(text, (FILLER,), "sentence", text_split_of(text, key), group=key))
    for text, kana in SENTENCE_KANA.items():
        _check_no_numbers(text)
        out.append(Text(text, (FILLER,), "sentence", text_split_of(text, "phrasebook"), kana=kana, group="phrasebook"))
    return out


def mixed_texts(count: int = 1200, seed: int = 20240519) -> list[Text]:
    """Sentences that carry a digit string: "the code is four two seven" -> ``[FILLER, 4, 2, 7]``."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[Text] = []
    while len(out) < count:
        ci = int(rng.integers(len(MIXED_CARRIERS)))
        prefix, suffix = MIXED_CARRIERS[ci]
        digits = [int(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 7)))]
        spoken, kana = _render_string(digits, rng)
        text = " ".join(p for p in (prefix, spoken, suffix) if p)
        if text in seen:
            continue
        seen.add(text)
        labels = ((FILLER,) if prefix else ()) + tuple(digits) + ((FILLER,) if suffix else ())
        kana_text = None
        if ci < len(MIXED_KANA) and not suffix:
            kana_text = f"{MIXED_KANA[ci][0]} {kana}"
        out.append(Text(text, labels, "mixed", text_split_of(text, f"carrier{ci}"), kana=kana_text,
                        group=f"carrier{ci}"))
    return out


@dataclass
class Corpus:
    """All texts by kind; built once per process (the word list is ~60k words)."""

    by_kind: dict[str, list[Text]] = field(default_factory=dict)

    def texts(self, kind: str, split: str | None = None) -> list[Text]:
        return [t for t in self.by_kind[kind] if split is None or t.text_split == split]


def build_corpus(wordlist: list[str] | None = None, strings: int = 6000, mixed: int = 1200) -> Corpus:
    digits = digit_texts()
    corpus = Corpus({
        "digit": [t for t in digits if t.kind == "digit"],
        "oh": [t for t in digits if t.kind == "oh"],
        "string": string_texts(strings),
        "word": word_texts(wordlist),
        "confusable": confusable_texts(),
        "sentence": sentence_texts(),
        "mixed": mixed_texts(mixed),
    })
    for kind, texts in corpus.by_kind.items():
        for t in texts:
            if tuple(labels_for(t.text)) != t.labels and kind not in ("confusable", "word"):
                raise AssertionError(f"{kind} text {t.text!r}: labels {t.labels} do not match its words")
    return corpus

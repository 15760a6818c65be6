"""Match detections to the words of a labelled stream by time window, and count the outcomes.

Word i owns the events that arrive from its first sample until the next word's first sample, but at
most ``max_latency_s`` after its last sample. The first event in the window decides the word:
``correct`` (right digit) or ``wrong``; no event is ``missed``; further events in the window and events
outside every window are ``extra``. Latency is that first event's time minus the word's end time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from digitspot.benchmarks.stats import wilson


@dataclass(frozen=True)
class WordTimes:
    digit: int
    start: float  # seconds (any clock, same as the events)
    end: float  # when its last sample was in the recognizer's hands


@dataclass(frozen=True)
class Detection:
    digit: int
    time: float  # same clock as WordTimes
    confidence: float | None = None


def match(words: Sequence[WordTimes], events: Sequence[Detection], max_latency_s: float = 2.0) -> dict[str, Any]:
    events = sorted(events, key=lambda e: e.time)
    per_word: list[dict[str, Any]] = []
    used = [False] * len(events)
    j = 0
    for i, word in enumerate(words):
        limit = word.end + max_latency_s
        if i + 1 < len(words):
            limit = min(limit, words[i + 1].start)
        while j < len(events) and events[j].time < word.start:
            j += 1
        k, first = j, None
        extras = 0
        while k < len(events) and events[k].time < limit:
            used[k] = True
            if first is None:
                first = events[k]
            else:
                extras += 1
            k += 1
        j = k
        if first is None:
            outcome = "missed"
        elif first.digit == word.digit:
            outcome = "correct"
        else:
            outcome = "wrong"
        per_word.append({
            "digit": word.digit, "outcome": outcome, "detected": None if first is None else first.digit,
            "latency_ms": None if first is None else round((first.time - word.end) * 1000, 3),
            "confidence": None if first is None else first.confidence, "extra": extras,
        })
    unattributed = used.count(False)
    counts = {o: sum(1 for w in per_word if w["outcome"] == o) for o in ("correct", "wrong", "missed")}
    counts["extra"] = sum(w["extra"] for w in per_word) + unattributed
    counts["extra_unattributed"] = unattributed
    return {
        "words": len(words), "events": len(events), "counts": counts,
        "accuracy": wilson(counts["correct"], len(words)),
        "latencies_ms": [w["latency_ms"] for w in per_word if w["latency_ms"] is not None],
        "per_word": per_word,
        "rule": (__doc__.split("\n\n", 1)[1].strip().replace("\n", " ")
                 .replace("``max_latency_s``", f"{max_latency_s:g} s").replace("``", "`")),
    }

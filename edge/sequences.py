"""Digit strings: published digits grouped into codes ("4271"), one ``sequence`` event per string.

A string ends when ``sequence_gap_ms`` of decided audio pass after its last digit with no new digit.
The gap is counted on the audio clock (stream samples), never the wall clock, so a file, stdin and a
microphone give the same strings, and the end of a stream ends the string in progress. It is measured
between digit runs (see :class:`~digitspot.edge.ctc_decoder.DigitHit`): from the end of one digit's run
to the start of the next one's. A CTC run sits inside its word, so the gap is roughly the pause between
two words plus part of their length; a string said at a natural pace (0-300 ms between words) stays one
string at the default.

Sequence numbers: sequence events have their own ``seq``, counting from 1 per start of the daemon
(``boot_id``), separate from the digit events' ``seq``. Each topic's ``seq`` then runs without gaps, so
a subscriber of either topic can both deduplicate by ``(boot_id, seq)`` and notice a lost message; a
sequence event lists the ``seq`` of its digit events (``digit_seqs``) to tie the two together.

Home Assistant: :class:`SequenceDiscovery` (an ``event`` entity whose events carry the code as the
``digits`` attribute) and :class:`CodeTriggerDiscovery` (a device trigger per configured code, which an
automation picks in the UI); see ``docs/home-assistant-sequences.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from digitspot.edge.ctc_decoder import DigitHit
from digitspot.edge.events import DiscoveryConfig, utc_ms

SEQUENCE_SCHEMA_VERSION = 1
DEFAULT_SEQUENCE_GAP_MS = 1200
DEFAULT_MAX_DIGITS = 32  # a string this long is closed and the next digit starts a new one
SEQUENCE_EVENT_TYPE = "sequence"
CODE_TRIGGER_TYPE = "spoken"

__all__ = [
    "DEFAULT_MAX_DIGITS", "DEFAULT_SEQUENCE_GAP_MS", "SEQUENCE_SCHEMA_VERSION", "CodeTriggerDiscovery",
    "DigitString", "SequenceDiscovery", "SequenceEvent", "SequenceGrouper", "build_sequence_event",
    "sequence_discovery_messages", "sequence_topic",
]


def sequence_topic(prefix: str) -> str:
    """``<prefix>/sequence`` (QoS 1, not retained)."""
    return f"{prefix}/sequence"


@dataclass(frozen=True)
class DigitString:
    """A closed string: its digits' hits in order and, where known, their digit events' ``seq``."""

    hits: tuple[DigitHit, ...]
    digit_seqs: tuple[int | None, ...]

    @property
    def digits(self) -> str:
        return "".join(str(h.digit) for h in self.hits)

    @property
    def confidences(self) -> list[float]:
        return [h.confidence for h in self.hits]

    @property
    def start_sample(self) -> int:
        return self.hits[0].start_sample

    @property
    def end_sample(self) -> int:
        return self.hits[-1].end_sample


class SequenceGrouper:
    """Groups digits into strings on the audio clock.

    Per decided batch the daemon calls :meth:`add` for each digit it published, then :meth:`advance` with
    the decoder's ``decided_until`` and ``open_digit_start``; at the end of the stream, :meth:`finish`.
    Each returns the strings that closed. A digit whose run starts less than ``gap`` after the previous
    digit's run ended joins its string; a string closes once the decided audio reaches that point with
    no digit run begun before it (a run still in progress may yet be published and join).
    """

    def __init__(self, sample_rate: int, gap_ms: int = DEFAULT_SEQUENCE_GAP_MS,
                 max_digits: int = DEFAULT_MAX_DIGITS):
        if gap_ms <= 0:
            raise ValueError(f"sequence_gap_ms {gap_ms} is not positive")
        if max_digits < 1:
            raise ValueError(f"max_digits {max_digits} is below 1")
        self.sample_rate = sample_rate
        self.gap_ms = gap_ms
        self.gap_samples = round(gap_ms * sample_rate / 1000)
        self.max_digits = max_digits
        self._hits: list[DigitHit] = []
        self._seqs: list[int | None] = []

    @property
    def pending(self) -> str:
        """Digits of the string in progress (empty when none)."""
        return "".join(str(h.digit) for h in self._hits)

    def add(self, hit: DigitHit, digit_seq: int | None = None) -> list[DigitString]:
        closed: list[DigitString] = []
        if self._hits and hit.start_sample - self._hits[-1].end_sample >= self.gap_samples:
            closed.append(self._close())
        self._hits.append(hit)
        self._seqs.append(digit_seq)
        if len(self._hits) >= self.max_digits:
            closed.append(self._close())
        return closed

    def advance(self, decided_until: int | None, open_digit_start: int | None = None) -> list[DigitString]:
        """The decided audio now reaches ``decided_until`` (stream samples); close the string if its gap
        has passed. ``open_digit_start``: start of a digit run still in progress (the decoder's)."""
        if not self._hits or decided_until is None:
            return []
        deadline = self._hits[-1].end_sample + self.gap_samples
        if decided_until < deadline or (open_digit_start is not None and open_digit_start < deadline):
            return []
        return [self._close()]

    def finish(self) -> list[DigitString]:
        """End of stream: the string in progress is complete."""
        return [self._close()] if self._hits else []

    def _close(self) -> DigitString:
        string = DigitString(tuple(self._hits), tuple(self._seqs))
        self._hits, self._seqs = [], []
        return string


@dataclass
class SequenceEvent:
    """``<prefix>/sequence`` (QoS 1, not retained): one spoken digit string, e.g. a door code.

    ``event_type`` is always ``"sequence"`` (the Home Assistant ``event`` entity's one event type); the
    code is ``digits`` ("oh" is "0"), with each digit's ``confidences`` in order and the ``digit_seqs``
    of its digit events. ``speech_start``/``speech_end`` are the wall-clock moments of the first digit's
    start and the last digit's end (UTC ms), ``audio_start_ms``/``audio_end_ms`` the same as offsets into
    the input, ``published_at`` when the string was closed and handed to MQTT (``gap_ms`` after the last
    digit, plus the model's lookahead). ``seq`` counts sequence events from 1 per ``boot_id``.
    """

    device_id: str
    digits: str
    confidences: list[float]
    digit_seqs: list[int | None]
    speech_start: int
    speech_end: int
    published_at: int
    audio_start_ms: int
    audio_end_ms: int
    gap_ms: int
    seq: int
    boot_id: str
    model_name: str
    model_sha256: str
    schema_version: int = SEQUENCE_SCHEMA_VERSION

    @property
    def event_type(self) -> str:
        return SEQUENCE_EVENT_TYPE

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "device_id": self.device_id,
            "event_type": self.event_type,
            "digits": self.digits,
            "length": len(self.digits),
            "confidences": [round(c, 4) for c in self.confidences],
            "digit_seqs": list(self.digit_seqs),
            "speech_start": self.speech_start,
            "speech_end": self.speech_end,
            "published_at": self.published_at,
            "audio_start_ms": self.audio_start_ms,
            "audio_end_ms": self.audio_end_ms,
            "gap_ms": self.gap_ms,
            "seq": self.seq,
            "boot_id": self.boot_id,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceEvent:
        return cls(
            device_id=str(data["device_id"]), digits=str(data["digits"]),
            confidences=[float(c) for c in data["confidences"]],
            digit_seqs=[None if s is None else int(s) for s in data.get("digit_seqs", [])],
            speech_start=int(data["speech_start"]), speech_end=int(data["speech_end"]),
            published_at=int(data["published_at"]), audio_start_ms=int(data["audio_start_ms"]),
            audio_end_ms=int(data["audio_end_ms"]), gap_ms=int(data["gap_ms"]), seq=int(data["seq"]),
            boot_id=str(data["boot_id"]), model_name=data["model"]["name"], model_sha256=data["model"]["sha256"],
            schema_version=int(data["schema_version"]),
        )


def build_sequence_event(string: DigitString, *, device_id: str, boot_id: str, seq: int, sample_rate: int,
                         wall_time: Callable[[int], float], gap_ms: int, model_name: str, model_sha256: str,
                         published_at: int | None = None) -> SequenceEvent:
    """The event for a closed string; ``wall_time`` maps a stream sample to ``time.time()`` seconds
    (``AudioClock.wall_time``)."""
    return SequenceEvent(
        device_id=device_id, digits=string.digits, confidences=string.confidences,
        digit_seqs=list(string.digit_seqs), speech_start=utc_ms(wall_time(string.start_sample)),
        speech_end=utc_ms(wall_time(string.end_sample)),
        published_at=utc_ms() if published_at is None else published_at,
        audio_start_ms=string.start_sample * 1000 // sample_rate, audio_end_ms=string.end_sample * 1000 // sample_rate,
        gap_ms=gap_ms, seq=seq, boot_id=boot_id, model_name=model_name, model_sha256=model_sha256,
    )


# -- Home Assistant discovery ---------------------------------------------------------------------------

CODE_PATTERN = re.compile(r"[0-9]{1,32}")


@dataclass
class SequenceDiscovery:
    """Home Assistant MQTT discovery of an ``event`` entity for strings
    (``<discovery_prefix>/event/<device_id>/sequence/config``, retained).

    Every string fires the entity's one event type ``"sequence"``; the other keys of the payload become
    the event's attributes, so an automation reads the code as ``trigger.to_state.attributes.digits``.
    The device block is the digit entity's, so both entities belong to one device.
    """

    device_id: str
    device_name: str
    prefix: str
    sw_version: str
    model_name: str

    def topic(self, discovery_prefix: str) -> str:
        return f"{discovery_prefix}/event/{self.device_id}/sequence/config"

    def to_dict(self) -> dict[str, Any]:
        base = _digit_discovery(self.device_id, self.device_name, self.prefix, self.sw_version, self.model_name)
        return {
            "name": "Spoken code",
            "unique_id": f"digitspot_{self.device_id}_sequence",
            "default_entity_id": f"event.digitspot_{self.device_id}_sequence",
            "object_id": f"digitspot_{self.device_id}_sequence",
            "state_topic": sequence_topic(self.prefix),
            "event_types": [SEQUENCE_EVENT_TYPE],
            "availability_topic": base["availability_topic"],
            "payload_available": base["payload_available"],
            "payload_not_available": base["payload_not_available"],
            "icon": "mdi:dialpad",
            "qos": 1,
            "device": base["device"],
            "origin": base["origin"],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass
class CodeTriggerDiscovery:
    """Home Assistant MQTT discovery of a device trigger that fires when one code is spoken
    (``<discovery_prefix>/device_automation/<device_id>/code_<code>/config``, retained).

    Home Assistant subscribes to ``<prefix>/sequence``, renders ``value_template`` (the event's
    ``digits``) and fires when it equals ``payload`` (the code). The trigger shows on the device's page
    as "code 4271 spoken" (type ``spoken``, subtype ``code 4271``; Home Assistant renders a type it has
    no translation for as "subtype type").
    """

    device_id: str
    device_name: str
    prefix: str
    sw_version: str
    model_name: str
    code: str

    def __post_init__(self) -> None:
        if not CODE_PATTERN.fullmatch(self.code):
            raise ValueError(f"code {self.code!r} is not 1-32 digits 0-9: list codes as strings of digits, "
                             'e.g. "4271" ("oh" is 0)')

    def topic(self, discovery_prefix: str) -> str:
        return f"{discovery_prefix}/device_automation/{self.device_id}/code_{self.code}/config"

    def to_dict(self) -> dict[str, Any]:
        base = _digit_discovery(self.device_id, self.device_name, self.prefix, self.sw_version, self.model_name)
        return {
            "automation_type": "trigger",
            "topic": sequence_topic(self.prefix),
            "type": CODE_TRIGGER_TYPE,
            "subtype": f"code {self.code}",
            "payload": self.code,
            "value_template": "{{ value_json.digits }}",
            "qos": 1,
            "device": base["device"],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def _digit_discovery(device_id: str, device_name: str, prefix: str, sw_version: str, model_name: str) -> dict[str, Any]:
    return DiscoveryConfig(device_id=device_id, device_name=device_name, prefix=prefix, sw_version=sw_version,
                           model_name=model_name).to_dict()


def sequence_discovery_messages(*, device_id: str, device_name: str, prefix: str, discovery_prefix: str,
                                sw_version: str, model_name: str, codes: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(topic, payload)`` of every retained discovery message for strings: the event entity, then one
    device trigger per code (duplicates once, in the order given)."""
    common = {"device_id": device_id, "device_name": device_name, "prefix": prefix, "sw_version": sw_version,
              "model_name": model_name}
    entity = SequenceDiscovery(**common)
    messages = [(entity.topic(discovery_prefix), entity.to_json())]
    for code in dict.fromkeys(codes):
        trigger = CodeTriggerDiscovery(**common, code=code)
        messages.append((trigger.topic(discovery_prefix), trigger.to_json()))
    return messages

"""Messages the daemon puts on the wire: typed, versioned dataclasses with one JSON form each.

Every message carries ``schema_version``; a consumer should ignore fields it does not know and
refuse a major version it does not understand. Times are UTC milliseconds since the Unix epoch.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

DIGIT_SCHEMA_VERSION = 1
INFO_SCHEMA_VERSION = 1


def utc_ms(t: float | None = None) -> int:
    """``time.time()`` seconds -> integer UTC milliseconds."""
    return round((time.time() if t is None else t) * 1000)


@dataclass(frozen=True)
class ScoredDigit:
    digit: int
    score: float


@dataclass
class DigitEvent:
    """``<prefix>/digit`` (QoS 1, not retained): one spoken digit.

    ``event_type`` is the digit as a string so a Home Assistant ``event`` entity can use it as is.
    ``speech_start``/``speech_end`` are when the word started/ended (wall clock of the audio's arrival);
    ``published_at`` is when the daemon decided and handed the message to MQTT, and ``latency_ms`` =
    ``published_at - speech_end``. ``audio_start_ms``/``audio_end_ms`` are the same moments as offsets in
    the input stream (useful with files). ``seq`` counts digits from 1 per boot of the daemon; with
    ``boot_id`` it identifies a message uniquely (a subscriber dedupes redeliveries with it).
    """

    device_id: str
    digit: int
    confidence: float
    top3: list[ScoredDigit]
    speech_start: int
    speech_end: int
    published_at: int
    latency_ms: int
    seq: int
    boot_id: str
    model_name: str
    model_sha256: str
    audio_start_ms: int
    audio_end_ms: int
    early: bool = False  # ended by the early end-of-speech rule (see edge.vad_segmenter)
    schema_version: int = DIGIT_SCHEMA_VERSION

    @property
    def event_type(self) -> str:
        return str(self.digit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "device_id": self.device_id,
            "event_type": self.event_type,
            "digit": self.digit,
            "confidence": round(self.confidence, 4),
            "top3": [{"digit": s.digit, "score": round(s.score, 4)} for s in self.top3],
            "speech_start": self.speech_start,
            "speech_end": self.speech_end,
            "published_at": self.published_at,
            "latency_ms": self.latency_ms,
            "seq": self.seq,
            "boot_id": self.boot_id,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "audio_start_ms": self.audio_start_ms,
            "audio_end_ms": self.audio_end_ms,
            "early": self.early,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DigitEvent:
        return cls(
            device_id=data["device_id"], digit=int(data["digit"]), confidence=float(data["confidence"]),
            top3=[ScoredDigit(int(s["digit"]), float(s["score"])) for s in data["top3"]],
            speech_start=int(data["speech_start"]), speech_end=int(data["speech_end"]),
            published_at=int(data["published_at"]), latency_ms=int(data["latency_ms"]), seq=int(data["seq"]),
            boot_id=str(data["boot_id"]), model_name=data["model"]["name"], model_sha256=data["model"]["sha256"],
            audio_start_ms=int(data.get("audio_start_ms", 0)), audio_end_ms=int(data.get("audio_end_ms", 0)),
            early=bool(data.get("early", False)), schema_version=int(data["schema_version"]),
        )


@dataclass
class InfoMessage:
    """``<prefix>/info`` (retained): what is running, for humans and fleet dashboards. No secrets."""

    device_id: str
    boot_id: str
    started_at: int
    versions: dict[str, str]
    model: dict[str, Any]  # model card summary
    config: dict[str, Any]  # effective configuration without secrets
    source: str  # what is being listened to
    attribution: str = ""
    # Why the running daemon reports ``offline`` (e.g. no microphone yet); None while it is online.
    offline_reason: str | None = None
    schema_version: int = INFO_SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), default=str)


@dataclass
class DiscoveryConfig:
    """Home Assistant MQTT discovery for an ``event`` entity (``homeassistant/event/<id>/digit/config``)."""

    device_id: str
    device_name: str
    prefix: str
    sw_version: str
    model_name: str
    event_types: list[str] = field(default_factory=lambda: [str(d) for d in range(10)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "Spoken digit",
            "unique_id": f"digitspot_{self.device_id}_digit",
            # default_entity_id is what Home Assistant reads from 2025.10 on; object_id is kept for the
            # releases before it (both give event.digitspot_<device_id>_digit).
            "default_entity_id": f"event.digitspot_{self.device_id}_digit",
            "object_id": f"digitspot_{self.device_id}_digit",
            "state_topic": f"{self.prefix}/digit",
            "event_types": self.event_types,
            "availability_topic": f"{self.prefix}/status",
            "payload_available": "online",
            "payload_not_available": "offline",
            "icon": "mdi:numeric",
            "qos": 1,
            "device": {
                "identifiers": [f"digitspot_{self.device_id}"],
                "name": self.device_name,
                "manufacturer": "digitspot",
                "model": self.model_name,
                "sw_version": self.sw_version,
            },
            "origin": {"name": "digitspot", "sw_version": self.sw_version},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

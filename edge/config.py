"""The daemon's configuration: one typed dataclass, filled from four layers.

Precedence, highest first: command-line flags > ``DIGITSPOT_*`` environment variables > the TOML file
(``--config``) > the defaults below. Every TOML key is a flag name with underscores
(``--mqtt-host`` -> ``mqtt_host``; dashes are accepted too) and every environment variable is
``DIGITSPOT_`` + the key in capitals (``DIGITSPOT_MQTT_HOST``).

The MQTT password is the one exception: it is never a flag or a TOML value (both end up in shell
history, process lists or world-readable files). It comes from ``mqtt_password_file`` (a file
holding only the password) or the ``DIGITSPOT_MQTT_PASSWORD`` environment variable, and it is kept
out of ``repr``, logs and the retained ``info`` message.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitspot.edge.errors import ConfigError

ENV_PREFIX = "DIGITSPOT_"
PASSWORD_ENV = "DIGITSPOT_MQTT_PASSWORD"
SOURCES = ("mic", "file", "stdin")
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_device_id() -> str:
    """The host name, reduced to characters that are safe in MQTT topics and HA unique ids."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().lower()).strip("-")
    return name or "digitspot"


@dataclass
class EdgeConfig:
    """Everything ``digitspot-edge run`` can be told. Units are in the names (ms, Hz, dB)."""

    # model and inference
    model: Path | None = None  # None: the shipped artifact (edge.classifier.default_model_path)
    threads: int = 1  # onnxruntime intra-op threads
    min_confidence: float = 0.5  # results below this softmax probability are logged, not published
    # audio source
    source: str = "mic"  # mic | file | stdin
    input: Path | None = None  # the file for --source file
    input_rate: int = 16000  # Hz of raw s16le on stdin
    realtime: bool = False  # pace --source file like a microphone (else as fast as possible)
    device: str | None = None  # microphone: PortAudio device name (substring) or index; None = default
    capture_rate: int | None = None  # microphone capture Hz; None = model rate if supported, else 48k/44.1k/16k
    # segmentation (see edge.vad_segmenter)
    vad_mode: int = 2  # webrtcvad aggressiveness 0..3 (3 misses quiet talkers, see vad_segmenter)
    vad_frame_ms: int = 10  # 10, 20 or 30
    preroll_ms: int = 150  # audio kept from before the detected start
    hangover_ms: int = 180  # longest quiet stretch inside one word (stop closures of "six", "eight")
    offset_ms: int = 50  # quiet this long after a confident classification ends the word early
    early_confidence: float = 0.75  # confidence needed to end a word after offset_ms instead of hangover_ms
    min_segment_ms: int = 60  # shorter bursts (of active audio) are clicks, not digits
    max_segment_ms: int = 1500  # a segment is cut and classified at this length
    min_voicing: float = 0.5  # pitch periodicity (0-1) a segment needs to be a word; 0 turns the check off
    onset_db: float = 9.0  # speech must be this many dB above the noise floor to start a segment
    offset_db: float = 6.0  # frames below floor + this many dB count as quiet
    # MQTT
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password_file: Path | None = None
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None  # None with TLS on: the system's trusted CAs
    mqtt_cert_file: Path | None = None  # client certificate (optional)
    mqtt_key_file: Path | None = None
    mqtt_tls_insecure: bool = False  # skip hostname verification (never on by default)
    mqtt_keepalive: int = 30  # seconds
    mqtt_client_id: str | None = None  # None: digitspot-<device_id>
    queue_size: int = 1000  # digits held while the broker is away; oldest dropped beyond this
    device_id: str = field(default_factory=default_device_id)
    device_name: str | None = None  # Home Assistant display name; None: "digitspot <device_id>"
    topic_prefix: str | None = None  # None: digitspot/<device_id>
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    no_mqtt: bool = False  # do not connect to any broker (with --print: a local pipe only)
    # output and logging
    print: bool = False  # also write each event as a JSON line to stdout
    log_level: str = "info"
    # the password itself: never from flags or TOML (see module docstring)
    mqtt_password: str | None = field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        return (self.topic_prefix or f"digitspot/{self.device_id}").rstrip("/")

    @property
    def client_id(self) -> str:
        return self.mqtt_client_id or f"digitspot-{self.device_id}"

    def public_dict(self) -> dict[str, Any]:
        """The effective configuration without secrets (for the retained info message and logs)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "mqtt_password":
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        out["mqtt_password_set"] = self.mqtt_password is not None
        out["topic_prefix"] = self.prefix
        return out


# Keys settable from flags, env and TOML: every field but the password itself.
KEYS = [f.name for f in dataclasses.fields(EdgeConfig) if f.name != "mqtt_password"]
_TYPES = typing.get_type_hints(EdgeConfig)


def _base_type(name: str) -> type:
    hint = _TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(_TYPES[name])


def convert(name: str, value: Any, origin: str) -> Any:
    """Turn a TOML/env/flag value into the field's type, or raise ConfigError naming its origin."""
    kind = _base_type(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip() == "" and _optional(name):
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected a whole number")
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if kind is Path:
            return Path(os.path.expanduser(str(value)))
        if name == "device" and isinstance(value, int):
            return str(value)
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a string, got {type(value).__name__}")  # noqa: TRY004
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {name} = {value!r} is not valid ({exc})") from exc


def read_toml(path: Path) -> dict[str, Any]:
    """Read the TOML file into {key: value}; unknown keys are an error (a typo must not go unnoticed)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: fix --config or create it")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc})") from exc
    # A [digitspot] or [edge] table is accepted as well as top-level keys.
    for table in ("digitspot", "edge"):
        if isinstance(data.get(table), dict):
            data = {**{k: v for k, v in data.items() if k != table}, **data[table]}
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key in ("mqtt_password", "password"):
            raise ConfigError(
                f"config file {path}: put the MQTT password in a separate file and set "
                f"mqtt_password_file (or the {PASSWORD_ENV} environment variable), not in the config"
            )
        if key not in KEYS:
            raise ConfigError(f"config file {path}: unknown key {raw_key!r}; known keys: {', '.join(KEYS)}")
        out[key] = convert(key, value, f"config file {path}")
    return out


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in KEYS:
        name = ENV_PREFIX + key.upper()
        if name in environ and key != "model":
            out[key] = convert(key, environ[name], f"environment variable {name}")
    # DIGITSPOT_MODEL is also read by `classify` and edge.classifier; same meaning here.
    if environ.get("DIGITSPOT_MODEL"):
        out["model"] = Path(environ["DIGITSPOT_MODEL"])
    return out


def read_password(cfg: EdgeConfig, environ: Mapping[str, str]) -> str | None:
    if cfg.mqtt_password_file is not None:
        try:
            text = cfg.mqtt_password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"mqtt_password_file {cfg.mqtt_password_file} cannot be read ({type(exc).__name__}); "
                "check the path and that the daemon's user may read it"
            ) from exc
        return text.rstrip("\r\n") or None
    # An empty variable (e.g. ``DIGITSPOT_MQTT_PASSWORD=`` in a systemd EnvironmentFile) means: none.
    return environ.get(PASSWORD_ENV) or None


def build_config(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> EdgeConfig:
    """Merge the layers (flags > env > TOML > defaults), read the password, validate, return."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_toml(Path(config_file)))
    merged.update(read_env(environ))
    for key, value in flags.items():
        if key not in KEYS:
            raise ConfigError(f"unknown option {key}")
        merged[key] = convert(key, value, f"--{key.replace('_', '-')}")
    cfg = EdgeConfig(**merged)
    cfg.mqtt_password = read_password(cfg, environ)
    validate(cfg)
    return cfg


def validate(cfg: EdgeConfig) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{key} = {getattr(cfg, key)!r}: {why}")

    if cfg.source not in SOURCES:
        raise bad("source", f"must be one of {', '.join(SOURCES)}")
    if cfg.source == "file" and cfg.input is None:
        raise ConfigError("source = file needs input (--input PATH)")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    cfg.log_level = cfg.log_level.lower()
    if not 0.0 <= cfg.min_confidence <= 1.0:
        raise bad("min_confidence", "must be between 0 and 1")
    if not 0.0 <= cfg.min_voicing <= 1.0:
        raise bad("min_voicing", "must be between 0 and 1 (0 turns the check off)")
    if not 0.0 <= cfg.early_confidence <= 1.0:
        raise bad("early_confidence", "must be between 0 and 1")
    if cfg.vad_mode not in (0, 1, 2, 3):
        raise bad("vad_mode", "must be 0, 1, 2 or 3")
    if cfg.vad_frame_ms not in (10, 20, 30):
        raise bad("vad_frame_ms", "must be 10, 20 or 30 (webrtcvad frame lengths)")
    if not 8000 <= cfg.input_rate <= 192000:
        raise bad("input_rate", "must be between 8000 and 192000 Hz")
    if cfg.capture_rate is not None and not 8000 <= cfg.capture_rate <= 192000:
        raise bad("capture_rate", "must be between 8000 and 192000 Hz")
    if not 1 <= cfg.mqtt_port <= 65535:
        raise bad("mqtt_port", "must be a TCP port (1-65535)")
    if not 1 <= cfg.threads <= 64:
        raise bad("threads", "must be between 1 and 64")
    if not 1 <= cfg.queue_size <= 1_000_000:
        raise bad("queue_size", "must be between 1 and 1000000")
    if cfg.mqtt_keepalive < 5:
        raise bad("mqtt_keepalive", "must be at least 5 seconds")
    for key in ("preroll_ms", "hangover_ms", "offset_ms", "min_segment_ms", "max_segment_ms"):
        if not 0 <= getattr(cfg, key) <= 10_000:
            raise bad(key, "must be between 0 and 10000 ms")
    if cfg.offset_ms > cfg.hangover_ms:
        raise bad("offset_ms", "must not exceed hangover_ms")
    if cfg.min_segment_ms >= cfg.max_segment_ms:
        raise bad("min_segment_ms", "must be less than max_segment_ms")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", cfg.device_id):
        raise bad("device_id", "use letters, digits, '-' and '_' only (it is part of topics and ids)")
    if cfg.topic_prefix is not None and (not cfg.topic_prefix.strip("/") or any(c in cfg.topic_prefix for c in "#+")):
        raise bad("topic_prefix", "must be a non-empty topic without wildcards (# +)")
    if (cfg.mqtt_cert_file is None) != (cfg.mqtt_key_file is None):
        raise ConfigError("mqtt_cert_file and mqtt_key_file go together: set both or neither")
    for key in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
        path = getattr(cfg, key)
        if path is not None and not path.is_file():
            raise bad(key, "file not found")
    if cfg.mqtt_password is not None and cfg.mqtt_username is None:
        raise ConfigError("an MQTT password is set but no mqtt_username: set both")

"""The daemon's configuration: one typed dataclass, filled from four layers.

Precedence, highest first: command-line flags > ``DIGITSPOT_*`` environment variables > the TOML file
(``--config``) > the defaults below. Every TOML key is a flag name with underscores
(``--mqtt-host`` -> ``mqtt_host``; dashes are accepted too) and every environment variable is
``DIGITSPOT_`` + the key in capitals (``DIGITSPOT_MQTT_HOST``).

Each setting is declared once, as a field of :class:`EdgeConfig`: its help text, flag spelling,
choices and the default shown to users live in the field's metadata, and the ``run`` command's
options (``digitspot.edge.run_command``), its ``--help`` and :func:`settings_markdown` (the table
in the docs) are all generated from it.

Thresholds that depend on the model (the fields of :class:`digitspot.edge.card.Thresholds`) default
to None, meaning "what the model card recommends"; :func:`effective_thresholds` puts the configured
ones over the card's.

The MQTT password is the one exception: it is never a flag or a TOML value (both end up in shell
history, process lists or world-readable files). It comes from ``mqtt_password_file`` (a file
holding only the password) or the ``DIGITSPOT_MQTT_PASSWORD`` environment variable, and it is kept
out of ``repr``, logs and the retained ``info`` message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import ssl
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from digitspot.edge.card import ModelCard, Thresholds, card_path_for, shipped_model_path
from digitspot.edge.errors import ConfigError, ModelError

ENV_PREFIX = "DIGITSPOT_"
PASSWORD_ENV = "DIGITSPOT_MQTT_PASSWORD"
CONFIG_ENV = "DIGITSPOT_CONFIG"
TOML_TABLES = ("digitspot", "edge")  # tables whose keys count as top-level keys
SOURCES = ("mic", "file", "stdin")
LOG_LEVELS = ("debug", "info", "warning", "error")
# MQTT 3.1.1 strings (topics, client ids, user names) are at most 65535 bytes of UTF-8, and the keepalive
# is a 16-bit number of seconds; paho does not check either before its network thread fails.
MQTT_MAX_STRING_BYTES = 65535
MQTT_MAX_KEEPALIVE_S = 65535
# Settings whose default comes from the model card (None in EdgeConfig = the card's value).
# The confidences a model card recommends (sequence_gap_ms, for ctc-stream models, is resolved by the stream path).
THRESHOLD_KEYS = ("min_confidence", "early_confidence")


def default_device_id() -> str:
    """The host name, reduced to characters that are safe in MQTT topics and HA unique ids."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().lower()).strip("-")
    return name or "digitspot"


def about(help: str, *, flag: str | None = None, choices: Sequence[str] | None = None,
          metavar: str | None = None, shown: str | None = None, from_card: bool = False,
          secret: bool = False) -> dict[str, Any]:
    """The field metadata of a setting: what users are told about it.

    ``help``: one line, what the setting does and its unit. ``flag``: the click declaration when it is
    not ``--key`` (``--key/--no-key`` for booleans). ``shown``: the default as text, for defaults whose
    value would mislead (None meaning "derived", a factory). ``from_card``: the default is the model
    card's recommendation. ``secret``: only from the environment (or a file), never a flag, a TOML
    key or ``repr``.
    """
    return {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "metavar": metavar,
            "shown": shown, "from_card": from_card, "secret": secret}


@dataclass
class EdgeConfig:
    """Everything ``digitspot-edge run`` can be told. Units are in the names (ms, Hz, dB)."""

    # model and inference
    model: Path | None = field(default=None, metadata=about(
        "Exported .onnx model (its .onnx.json card beside it)", shown="the shipped model"))
    threads: int = field(default=1, metadata=about("onnxruntime threads"))
    min_confidence: float | None = field(default=None, metadata=about(
        "Publish only digits at least this probable (0-1); below it a word is logged, not published",
        from_card=True))
    # audio source
    source: str = field(default="mic", metadata=about("Where audio comes from", choices=SOURCES))
    input: Path | None = field(default=None, metadata=about(
        "Audio file for --source file (WAV/FLAC/OGG, any rate)"))
    input_rate: int = field(default=16000, metadata=about(
        "Sample rate (Hz) of raw s16le mono audio on stdin"))
    realtime: bool = field(default=False, metadata=about(
        "Pace --source file like a microphone (else as fast as possible)"))
    device: str | None = field(default=None, metadata=about(
        "Microphone: PortAudio device index or name substring (see `digitspot-edge devices`); waited for "
        "if missing", metavar="NAME|INDEX", shown="the default input"))
    capture_rate: int | None = field(default=None, metadata=about(
        "Microphone capture rate in Hz", shown="the model rate if supported, else 16k/48k/44.1k"))
    # segmentation (see digitspot.edge.vad_segmenter)
    vad_mode: int = field(default=2, metadata=about("webrtcvad aggressiveness 0-3 (3 misses quiet talkers)"))
    vad_frame_ms: int = field(default=10, metadata=about("VAD frame length in ms (10, 20, 30)"))
    preroll_ms: int = field(default=150, metadata=about(
        "Audio kept from before the detected start of a word (ms)"))
    hangover_ms: int = field(default=180, metadata=about(
        "Longest quiet inside one word (ms; stop closures of \"six\", \"eight\"), used while the model is "
        "not yet sure"))
    offset_ms: int = field(default=50, metadata=about(
        "Quiet (ms) after which a confidently classified word ends"))
    early_confidence: float | None = field(default=None, metadata=about(
        "End a word after --offset-ms of quiet when it is at least this probable (0-1)", from_card=True))
    min_segment_ms: int = field(default=60, metadata=about(
        "Shorter bursts of active audio are clicks, not digits (ms)"))
    max_segment_ms: int = field(default=1500, metadata=about(
        "A segment is cut and classified at this length (ms)"))
    min_voicing: float = field(default=0.5, metadata=about(
        "Pitch periodicity (0-1) a sound needs to count as a word; 0: off"))
    onset_db: float = field(default=9.0, metadata=about("A word starts this many dB above the noise floor"))
    offset_db: float = field(default=6.0, metadata=about(
        "Frames within this many dB of the noise floor are quiet"))
    # digit strings (ctc-stream models; see digitspot.edge.stream_pipeline)
    sequence_gap_ms: int | None = field(default=None, metadata=about(
        "A spoken string of digits (a code) ends after this many ms without a new digit; ctc-stream models "
        "only", shown="the model card's (1200 if it sets none)"))
    # MQTT
    mqtt_host: str = field(default="localhost", metadata=about("MQTT broker host"))
    mqtt_port: int = field(default=1883, metadata=about("MQTT broker port"))
    mqtt_username: str | None = field(default=None, metadata=about(
        "MQTT user name (password: --mqtt-password-file or env DIGITSPOT_MQTT_PASSWORD)"))
    mqtt_password_file: Path | None = field(default=None, metadata=about(
        "File holding only the MQTT password"))
    mqtt_tls: bool = field(default=False, metadata=about(
        "Connect with TLS (system CAs unless --mqtt-ca-file)"))
    mqtt_ca_file: Path | None = field(default=None, metadata=about(
        "CA certificate(s) that sign the broker's certificate (implies TLS)", shown="the system's CAs"))
    mqtt_cert_file: Path | None = field(default=None, metadata=about(
        "Client certificate for TLS client authentication"))
    mqtt_key_file: Path | None = field(default=None, metadata=about("Private key of --mqtt-cert-file"))
    mqtt_tls_insecure: bool = field(default=False, metadata=about(
        "Skip TLS hostname verification (testing only)"))
    mqtt_keepalive: int = field(default=30, metadata=about("MQTT keepalive in seconds"))
    mqtt_client_id: str | None = field(default=None, metadata=about(
        "MQTT client id", shown="digitspot-<device_id>"))
    queue_size: int = field(default=1000, metadata=about(
        "Digits kept while the broker is unreachable (oldest dropped beyond)"))
    device_id: str = field(default_factory=default_device_id, metadata=about(
        "Id of this sensor in topics and Home Assistant", shown="the host name (lowercase, a-z 0-9 _ -)"))
    device_name: str | None = field(default=None, metadata=about(
        "Display name in Home Assistant", shown="digitspot <device_id>"))
    topic_prefix: str | None = field(default=None, metadata=about(
        "Topic prefix", shown="digitspot/<device_id>"))
    discovery: bool = field(default=True, metadata=about("Publish Home Assistant MQTT discovery"))
    discovery_prefix: str = field(default="homeassistant", metadata=about("Home Assistant discovery prefix"))
    trigger_codes: list[str] = field(default_factory=list, metadata=about(
        "Codes offered as Home Assistant device triggers (\"code 4271 spoken\"); TOML: a list of strings, "
        "flag and environment: comma-separated; ctc-stream models only", metavar="CODE,...", shown="none"))
    no_mqtt: bool = field(default=False, metadata=about(
        "Do not use MQTT at all (with --print: stdout only)", flag="--no-mqtt/--mqtt"))
    # output and logging
    print: bool = field(default=False, metadata=about(
        "Also write each event (digits; with a ctc-stream model, strings too) as a JSON line to stdout"))
    log_level: str = field(default="info", metadata=about("Log level", choices=LOG_LEVELS))
    # the password itself: never from flags or TOML (see module docstring)
    mqtt_password: str | None = field(default=None, repr=False, metadata=about(
        "MQTT password; set only here or in --mqtt-password-file, never as a flag or TOML key", secret=True))

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


def effective_thresholds(cfg: EdgeConfig, recommended: Thresholds) -> Thresholds:
    """The model card's recommended thresholds with every one the configuration sets put over them."""
    return dataclasses.replace(recommended, **{key: getattr(cfg, key) for key in THRESHOLD_KEYS
                                               if getattr(cfg, key) is not None})


# Keys settable from flags, env and TOML: every field but the secret (the password itself).
KEYS = [f.name for f in dataclasses.fields(EdgeConfig) if not f.metadata["secret"]]
_TYPES = typing.get_type_hints(EdgeConfig)


def _base_type(name: str) -> type:
    hint = _TYPES[name]
    if typing.get_origin(hint) is list:
        return str  # a list is one comma-separated string on the command line and in the environment
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
        if name == "trigger_codes":
            return _codes(value)
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
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        if kind is Path:
            return Path(os.path.expanduser(str(value)))
        if name == "device" and isinstance(value, int):
            return str(value)
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a string, got {type(value).__name__}")  # noqa: TRY004
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {name} = {value!r} is not valid ({exc})") from exc


def _codes(value: Any) -> list[str]:
    """``trigger_codes`` from TOML (a list of strings) or a flag or variable ("4271,0042"); a code given
    twice counts once. Each code is checked in :func:`validate`."""
    if isinstance(value, str):
        codes = [code for code in re.split(r"[\s,]+", value.strip()) if code]
    elif isinstance(value, list):
        codes = value
        numbers = [code for code in codes if not isinstance(code, str)]
        if numbers:
            raise ValueError(f"{numbers[0]!r} is not a string: quote each code, e.g. [\"4271\", \"0042\"] "
                             "(a number would lose its leading zeros)")
    else:
        raise ValueError('expected a list of codes, e.g. ["4271", "0042"]')  # noqa: TRY004 (convert() catches it)
    return list(dict.fromkeys(codes))


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
    # A [digitspot] or [edge] table is accepted as well as top-level keys. A key given twice (in two
    # of these places, or as mqtt-host and mqtt_host) with different values is an error: which one
    # should win is a guess, and a silent guess is how a sensor ends up on the wrong broker.
    entries: list[tuple[str, str, Any]] = []  # (where, raw key, value)
    for where, table in (("top level", data), *((f"[{name}]", data.get(name)) for name in TOML_TABLES)):
        if isinstance(table, dict):
            entries += [(where, k, v) for k, v in table.items() if not (table is data and k in TOML_TABLES
                                                                          and isinstance(v, dict))]
    seen: dict[str, tuple[str, str, Any]] = {}
    for where, raw_key, value in entries:
        key = raw_key.replace("-", "_")
        if key in seen and seen[key][2] != value:
            first_where, first_key, first_value = seen[key]
            raise ConfigError(f"config file {path}: {key} is set twice with different values ({first_where} "
                              f"{first_key} = {_shown(first_value)}, {where} {raw_key} = {_shown(value)}); keep one")
        seen.setdefault(key, (where, raw_key, value))
    out: dict[str, Any] = {}
    for key, (_, raw_key, value) in seen.items():
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
            # The path is not shown: a password typed where its file's path belongs must not reach a log.
            raise ConfigError(
                f"mqtt_password_file cannot be read ({type(exc).__name__}; the path is not shown, in case it is "
                "the password itself): give the path of a file holding only the password, readable by the "
                "daemon's user"
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
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
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


def _shown(value: Any, limit: int = 60) -> str:
    """``repr`` of a value for a one-line message, shortened: a 70,000-character id must not fill the log."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[: limit - 3] + "..." + length


def _topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to (MQTT 3.1.1, section 4.7), or None."""
    if "#" in topic or "+" in topic:
        return "must not contain the MQTT wildcards # or +"
    if "\x00" in topic:
        return "must not contain a NUL character"
    if topic.startswith("$"):
        return "must not start with $ (topics the broker reserves for itself)"
    if len(topic.encode("utf-8")) > MQTT_MAX_STRING_BYTES:
        return f"makes a topic longer than MQTT's {MQTT_MAX_STRING_BYTES} bytes; use a shorter one"
    return None


def mqtt_topics(cfg: EdgeConfig) -> dict[str, str]:
    """The longest topic the daemon uses under each setting that topics are built from."""
    topics = {"topic_prefix": f"{cfg.prefix}/status"}
    if cfg.discovery:
        topics["discovery_prefix"] = f"{cfg.discovery_prefix}/event/{cfg.device_id}/digit/config"
    return topics


def make_tls_context(cfg: EdgeConfig) -> ssl.SSLContext | None:
    """The TLS context for the broker connection (None without TLS); a CA, certificate or key file that
    OpenSSL cannot use is a ConfigError naming the setting, found at start rather than as a traceback."""
    if not (cfg.mqtt_tls or cfg.mqtt_ca_file is not None):
        return None
    try:
        context = ssl.create_default_context(cafile=str(cfg.mqtt_ca_file) if cfg.mqtt_ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"mqtt_ca_file {cfg.mqtt_ca_file}: not a usable CA certificate ({_ssl_reason(exc)}); "
                          "give the PEM file of the CA that signs the broker's certificate") from exc
    if cfg.mqtt_cert_file is not None:
        try:
            # A key with a passphrase cannot be opened unattended: refuse it instead of prompting on a tty.
            context.load_cert_chain(str(cfg.mqtt_cert_file), str(cfg.mqtt_key_file), password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"mqtt_cert_file {cfg.mqtt_cert_file} and mqtt_key_file {cfg.mqtt_key_file} cannot be used "
                f"together ({_ssl_reason(exc)}); give a PEM certificate and its own unencrypted private key"
            ) from exc
    if cfg.mqtt_tls_insecure:
        context.check_hostname = False
    return context


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) \
        or str(exc).splitlines()[0]


def validate(cfg: EdgeConfig) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{key} = {_shown(getattr(cfg, key))}: {why}")

    if cfg.source not in SOURCES:
        raise bad("source", f"must be one of {', '.join(SOURCES)}")
    if cfg.source == "file" and cfg.input is None:
        raise ConfigError("source = file needs input (--input PATH)")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise bad("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    cfg.log_level = cfg.log_level.lower()
    for key in THRESHOLD_KEYS:
        value = getattr(cfg, key)
        if value is not None and not 0.0 <= value <= 1.0:
            raise bad(key, "must be between 0 and 1 (or unset: the model card's)")
    if not 0.0 <= cfg.min_voicing <= 1.0:
        raise bad("min_voicing", "must be between 0 and 1 (0 turns the check off)")
    if cfg.sequence_gap_ms is not None and not 1 <= cfg.sequence_gap_ms <= 60_000:
        raise bad("sequence_gap_ms", "must be between 1 and 60000 ms (or unset: the model card's)")
    # imported here: it brings numpy, which --help does not need
    from digitspot.edge.sequences import CODE_PATTERN

    for code in cfg.trigger_codes:
        if not CODE_PATTERN.fullmatch(code):
            raise bad("trigger_codes", f"{_shown(code)} is not a code: list codes of 1-32 digits 0-9, "
                                       'e.g. "4271" ("oh" is 0)')
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
    if not 5 <= cfg.mqtt_keepalive <= MQTT_MAX_KEEPALIVE_S:
        raise bad("mqtt_keepalive", f"must be between 5 and {MQTT_MAX_KEEPALIVE_S} seconds (MQTT's limit)")
    for key in ("onset_db", "offset_db"):
        if not 0.0 < getattr(cfg, key) <= 60.0:
            raise bad(key, "must be above 0 and at most 60 dB (a level above the noise floor)")
    if not cfg.mqtt_host.strip() or any(c.isspace() for c in cfg.mqtt_host):
        raise bad("mqtt_host", "must be a host name or address")
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
    if cfg.discovery and not cfg.discovery_prefix.strip("/"):
        raise bad("discovery_prefix", "must be a non-empty topic (Home Assistant's is homeassistant)")
    cfg.discovery_prefix = cfg.discovery_prefix.rstrip("/")
    for key, topic in mqtt_topics(cfg).items():
        problem = _topic_problem(topic)
        if problem is not None:
            # A long device_id makes every topic long: name it rather than the prefix it went into.
            if len(cfg.device_id.encode("utf-8")) > MQTT_MAX_STRING_BYTES // 2:
                key = "device_id"
            raise bad(key, problem)
    for key, value in (("mqtt_client_id", cfg.client_id), ("mqtt_username", cfg.mqtt_username)):
        if value is not None and len(value.encode("utf-8")) > MQTT_MAX_STRING_BYTES:
            # the client id is built from device_id unless set
            raise bad(key if getattr(cfg, key) is not None else "device_id",
                      f"is longer than MQTT's {MQTT_MAX_STRING_BYTES} bytes; use a shorter one")
    if (cfg.mqtt_cert_file is None) != (cfg.mqtt_key_file is None):
        raise ConfigError("mqtt_cert_file and mqtt_key_file go together: set both or neither")
    for key in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
        path = getattr(cfg, key)
        if path is not None and not path.is_file():
            raise bad(key, "file not found")
    if cfg.mqtt_password is not None and cfg.mqtt_username is None:
        raise ConfigError("an MQTT password is set but no mqtt_username: set both")
    if not cfg.no_mqtt:
        make_tls_context(cfg)


# --- what users are told: --help and the settings table in the docs --------------------------------

@dataclass(frozen=True)
class Setting:
    """One field of :class:`EdgeConfig` as the command line, the environment and the docs present it."""

    key: str
    kind: type  # bool, int, float, str or Path
    help: str
    default: str  # the effective default, as text
    literal: bool  # the default is a value one could write (1883, "mic"), not a description
    flags: tuple[str, ...]  # ("--mqtt-host",), ("--realtime", "--no-realtime"); () for the secret
    env: str
    choices: tuple[str, ...] | None
    metavar: str | None

    @property
    def decl(self) -> str:
        """The click declaration: ``--key`` or ``--on/--off``."""
        return "/".join(self.flags)


@cache
def shipped_thresholds() -> Thresholds | None:
    """What the shipped model's card recommends (for help and docs), or None when it cannot be read."""
    try:
        data = json.loads(card_path_for(shipped_model_path()).read_text(encoding="utf-8"))
        return ModelCard.from_dict(data).thresholds
    except (OSError, ValueError, ModelError, ModuleNotFoundError):
        return None


def _shown_default(f: dataclasses.Field) -> str:
    if f.metadata["from_card"]:
        shipped = shipped_thresholds()
        example = f" ({getattr(shipped, f.name)} for the shipped model)" if shipped else ""
        return "the model card's" + example
    if f.metadata["shown"] is not None:
        return f.metadata["shown"]
    value = f.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings() -> list[Setting]:
    """Every configuration field, in declaration order, with its flags, variable and shown default."""
    out = []
    for f in dataclasses.fields(EdgeConfig):
        kind = _base_type(f.name)
        if f.metadata["secret"]:
            flags: tuple[str, ...] = ()
        elif f.metadata["flag"]:
            flags = tuple(f.metadata["flag"].split("/"))
        else:
            dashed = "--" + f.name.replace("_", "-")
            flags = (dashed, "--no-" + dashed[2:]) if kind is bool else (dashed,)
        literal = not (f.metadata["from_card"] or f.metadata["shown"] is not None or f.default is None)
        out.append(Setting(key=f.name, kind=kind, help=f.metadata["help"], default=_shown_default(f),
                           literal=literal, flags=flags,
                           env=ENV_PREFIX + f.name.upper(), choices=f.metadata["choices"],
                           metavar=f.metadata["metavar"]))
    return out


def _cell(text: str) -> str:
    """Markdown table cell: escape pipes, and angle brackets outside code spans (else they read as HTML)."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def settings_markdown() -> str:
    """The settings table for the docs, generated from :class:`EdgeConfig` (one row per setting)."""
    rows = ["| Key / flag | Environment variable | Default | Meaning |", "|---|---|---|---|",
            f"| `--config` | `{CONFIG_ENV}` | none | TOML file whose keys are the keys below |"]
    for s in settings():
        if s.flags:
            name = f"`{s.key}` / " + ", ".join(f"`{flag}`" for flag in s.flags)
        else:
            name = f"`{s.key}` (environment only)"
        meaning = s.help + (f" ({', '.join(s.choices)})" if s.choices else "")
        default = f"`{s.default}`" if s.literal else s.default
        rows.append(f"| {_cell(name)} | `{s.env}` | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"

"""``digitspot-edge run`` (the daemon) and ``digitspot-edge devices`` (list microphones).

Every ``run`` flag is also a TOML key (underscores) and a ``DIGITSPOT_*`` environment variable; see
``digitspot.edge.config`` for the precedence. Flags default to "not given" here so that the lower layers can
fill them; ``--help`` shows the effective built-in defaults.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from digitspot.edge.cli_common import CONTEXT_SETTINGS, fail
from digitspot.edge.config import EdgeConfig, build_config
from digitspot.edge.errors import DigitspotError

_DEFAULTS = EdgeConfig(device_id="<hostname>")


def _default(key: str) -> str:
    value = getattr(_DEFAULTS, key)
    if key == "model":
        return "the shipped artifact"
    if key == "topic_prefix":
        return "digitspot/<device_id>"
    return "unset" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def opt(key: str, help: str, type=None, flag: str | None = None, choices=None, metavar=None):
    """A run option whose value defaults to None (= not given), with the built-in default in its help."""
    name = flag or "--" + key.replace("_", "-")
    kwargs = {"default": None, "show_default": False, "help": f"{help}  [default: {_default(key)}]"}
    if choices:
        kwargs["type"] = click.Choice(choices)
    elif type is not None:
        kwargs["type"] = type
    if metavar:
        kwargs["metavar"] = metavar
    return click.option(name, key, **kwargs)


def switch(key: str, help: str, on: str | None = None, off: str | None = None):
    dashed = key.replace("_", "-")
    decls = f"{on or '--' + dashed}/{off or '--no-' + dashed}"
    return click.option(decls, key, default=None, help=f"{help}  [default: {_default(key)}]")


RUN_OPTIONS = [
    click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                 help="TOML file whose keys mirror these flags (mqtt_host = \"...\"); env DIGITSPOT_CONFIG"),
    opt("model", "Exported .onnx model (its .onnx.json card beside it)", type=click.Path(path_type=Path)),
    opt("source", "Where audio comes from", choices=["mic", "file", "stdin"]),
    opt("input", "Audio file for --source file (WAV/FLAC/OGG, any rate)", type=click.Path(path_type=Path)),
    opt("input_rate", "Sample rate (Hz) of raw s16le mono audio on stdin", type=int),
    switch("realtime", "Pace --source file like a microphone (else as fast as possible)"),
    opt("device", "Microphone: PortAudio device index or name (see `digitspot-edge devices`)", metavar="NAME|INDEX"),
    opt("capture_rate", "Microphone capture rate in Hz (unset: the model rate if supported, else 16k/48k/44.1k)",
        type=int),
    opt("mqtt_host", "MQTT broker host"),
    opt("mqtt_port", "MQTT broker port", type=int),
    opt("mqtt_username", "MQTT user name (password: --mqtt-password-file or env DIGITSPOT_MQTT_PASSWORD)"),
    opt("mqtt_password_file", "File holding only the MQTT password", type=click.Path(path_type=Path)),
    switch("mqtt_tls", "Connect with TLS (system CAs unless --mqtt-ca-file)"),
    opt("mqtt_ca_file", "CA certificate(s) that sign the broker's certificate (implies TLS)",
        type=click.Path(path_type=Path)),
    opt("mqtt_cert_file", "Client certificate for TLS client authentication", type=click.Path(path_type=Path)),
    opt("mqtt_key_file", "Private key of --mqtt-cert-file", type=click.Path(path_type=Path)),
    switch("mqtt_tls_insecure", "Skip TLS hostname verification (testing only)"),
    opt("mqtt_keepalive", "MQTT keepalive in seconds", type=int),
    opt("mqtt_client_id", "MQTT client id (unset: digitspot-<device_id>)"),
    opt("queue_size", "Digits kept while the broker is unreachable (oldest dropped beyond)", type=int),
    switch("no_mqtt", "Do not use MQTT at all (with --print: stdout only)", on="--no-mqtt", off="--mqtt"),
    opt("device_id", "Id of this sensor in topics and Home Assistant"),
    opt("device_name", "Display name in Home Assistant (unset: \"digitspot <device_id>\")"),
    opt("topic_prefix", "Topic prefix (unset: digitspot/<device_id>)"),
    switch("discovery", "Publish Home Assistant MQTT discovery"),
    opt("discovery_prefix", "Home Assistant discovery prefix"),
    opt("min_confidence", "Publish only digits at least this probable (0-1)", type=float),
    opt("early_confidence", "End a word after --offset-ms of quiet when at least this probable", type=float),
    opt("threads", "onnxruntime threads", type=int),
    opt("vad_mode", "webrtcvad aggressiveness 0-3", type=int),
    opt("vad_frame_ms", "Frame length in ms (10, 20, 30)", type=int),
    opt("preroll_ms", "Audio kept before the detected start (ms)", type=int),
    opt("hangover_ms", "Longest quiet inside a word (ms), used when the model is not yet sure", type=int),
    opt("offset_ms", "Quiet (ms) after which a confidently classified word ends", type=int),
    opt("min_segment_ms", "Shorter sounds are ignored (ms of active audio)", type=int),
    opt("max_segment_ms", "Longer sounds are not a digit and are ignored (ms)", type=int),
    opt("min_voicing", "Pitch periodicity (0-1) a sound needs to count as a word; 0: off", type=float),
    opt("onset_db", "A word starts this many dB above the noise floor", type=float),
    opt("offset_db", "Frames within this many dB of the noise floor are quiet", type=float),
    switch("print", "Also write each digit event as a JSON line to stdout", on="--print", off="--no-print"),
    opt("log_level", "Log level", choices=["debug", "info", "warning", "error"]),
]


def with_options(func):
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


@click.command(context_settings=CONTEXT_SETTINGS)
@with_options
def run(config_file: Path | None, **flags) -> None:
    """Listen and publish every spoken digit over MQTT (the daemon).

    \b
    Examples:
      digitspot-edge run --config /etc/digitspot/edge.toml
      digitspot-edge run --source file --input digits.wav --realtime --print --no-mqtt
      arecord -q -f S16_LE -r 16000 -c 1 -t raw | digitspot-edge run --source stdin --input-rate 16000
    """
    from digitspot.edge.daemon import run_daemon, setup_logging

    try:
        cfg = build_config(flags, config_file)
    except DigitspotError as exc:
        fail(exc)
    setup_logging(cfg.log_level)
    try:
        code = run_daemon(cfg)
    except DigitspotError as exc:
        fail(exc)
    sys.exit(code)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device")
def devices(as_json: bool) -> None:
    """List the capture devices PortAudio sees (for --device NAME|INDEX)."""
    from digitspot.edge.sources import list_input_devices

    try:
        found = list_input_devices()
    except DigitspotError as exc:
        fail(exc)
    if as_json:
        for d in found:
            click.echo(json.dumps(dataclasses.asdict(d)))
        return
    if not found:
        click.echo("no capture devices found (is a microphone plugged in? is the user in group `audio`?)")
        return
    for d in found:
        mark = "*" if d.is_default else " "
        click.echo(f"{mark}{d.index:3d}  {d.name}  ({d.channels} ch, {d.default_rate} Hz, {d.host_api})")

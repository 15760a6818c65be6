"""Configuration precedence (flags > DIGITSPOT_* env > TOML > defaults), validation and secrets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import run_cli

from digitspot.edge.card import ModelCard, Thresholds, card_path_for, load_card, shipped_model_path
from digitspot.edge.config import (
    KEYS,
    THRESHOLD_KEYS,
    EdgeConfig,
    build_config,
    effective_thresholds,
    settings,
    settings_markdown,
)
from digitspot.edge.errors import EXIT_CONFIG, ConfigError, ModelError
from digitspot.edge.run_command import run


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def test_defaults():
    cfg = build_config({}, None, environ={})
    assert cfg.source == "mic" and cfg.mqtt_port == 1883 and cfg.threads == 1 and cfg.queue_size == 1000
    assert cfg.prefix == f"digitspot/{cfg.device_id}"
    assert cfg.mqtt_password is None


def test_precedence_flags_over_env_over_toml_over_defaults(tmp_path):
    toml = write(tmp_path, 'mqtt_host = "from-toml"\nmqtt_port = 1111\ndevice_id = "toml"\nmin_confidence = 0.7\n'
                           'realtime = true\n')
    env = {"DIGITSPOT_MQTT_PORT": "2222", "DIGITSPOT_DEVICE_ID": "env"}
    cfg = build_config({"device_id": "flag"}, toml, environ=env)
    assert cfg.mqtt_host == "from-toml"  # only in TOML
    assert cfg.mqtt_port == 2222  # env beats TOML
    assert cfg.device_id == "flag"  # flag beats env
    assert cfg.min_confidence == 0.7 and cfg.realtime is True
    assert cfg.topic_prefix is None and cfg.prefix == "digitspot/flag"


def test_toml_accepts_dashes_and_a_table(tmp_path):
    cfg = build_config({}, write(tmp_path, '[digitspot]\nmqtt-host = "h"\ntopic-prefix = "home/kitchen"\n'), environ={})
    assert cfg.mqtt_host == "h" and cfg.prefix == "home/kitchen"


def test_env_config_path_and_booleans(tmp_path):
    toml = write(tmp_path, 'mqtt_host = "x"\n')
    cfg = build_config({}, None, environ={"DIGITSPOT_CONFIG": str(toml), "DIGITSPOT_DISCOVERY": "off",
                                          "DIGITSPOT_PRINT": "yes"})
    assert cfg.mqtt_host == "x" and cfg.discovery is False and cfg.print is True


@pytest.mark.parametrize("text,fragment", [
    ('mqtt_hots = "x"\n', "unknown key"),
    ('mqtt_port = "many"\n', "mqtt_port"),
    ('mqtt_port = 70000\n', "mqtt_port"),
    ('source = "radio"\n', "source"),
    ('vad_frame_ms = 15\n', "vad_frame_ms"),
    ('min_confidence = 2\n', "min_confidence"),
    ('mqtt_password = "hunter2"\n', "password"),
    ('this is not toml', "not valid TOML"),
    ('source = "file"\n', "input"),
    ('device_id = "a/b"\n', "device_id"),
    ('topic_prefix = "a/#"\n', "topic_prefix"),
    ('mqtt_cert_file = "/etc/hostname"\n', "together"),
    ('discovery_prefix = "home/#"\n', "discovery_prefix = 'home/#': must not contain the MQTT wildcards"),
    ('discovery_prefix = "+/x"\n', "discovery_prefix"),
    ('discovery_prefix = ""\n', "discovery_prefix = '': must be a non-empty topic"),
    ('topic_prefix = "$SYS/digits"\n', "must not start with $"),
    ('mqtt_keepalive = 100000\n', "mqtt_keepalive = 100000: must be between 5 and 65535 seconds"),
    ('mqtt_keepalive = 65536\n', "mqtt_keepalive"),
    (f'device_id = "{"d" * 70_000}"\n', "(70000 characters): makes a topic longer than MQTT's 65535 bytes"),
    (f'mqtt_client_id = "{"c" * 65_536}"\n', "mqtt_client_id"),
    ('onset_db = nan\n', "onset_db = nan is not valid (expected a finite number)"),
    ('offset_db = inf\n', "offset_db = inf is not valid"),
    ('onset_db = -3.0\n', "onset_db = -3.0: must be above 0"),
    ('offset_db = 0\n', "offset_db = 0.0: must be above 0"),
    ('onset_db = 61\n', "onset_db"),
    ('min_voicing = nan\n', "min_voicing"),
    ('mqtt_host = ""\n', "mqtt_host = '': must be a host name"),
    ('mqtt_host = "broker lan"\n', "mqtt_host"),
])
def test_bad_config_is_a_config_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as info:
        build_config({}, write(tmp_path, text), environ={})
    assert fragment in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG == 78


def test_a_long_value_is_shortened_in_the_message(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_config({"device_id": "d" * 70_000}, None, environ={})
    assert len(str(info.value)) < 200


def test_limits_that_are_still_fine():
    cfg = build_config({"mqtt_keepalive": 65535, "onset_db": 0.5, "offset_db": 60, "discovery_prefix": "ha/"},
                       None, environ={})
    assert cfg.mqtt_keepalive == 65535 and cfg.discovery_prefix == "ha"
    # discovery off: its prefix is not used, so it is not checked
    assert build_config({"discovery": False, "discovery_prefix": "x/#"}, None, environ={}).discovery is False


@pytest.mark.parametrize("text", [
    '[digitspot]\nmqtt_host = "a"\n[edge]\nmqtt_host = "b"\n',
    'mqtt_host = "a"\n[edge]\nmqtt_host = "b"\n',
    'mqtt-host = "a"\nmqtt_host = "b"\n',
])
def test_one_key_with_two_values_names_both(tmp_path, text):
    """Two places in the TOML file give one key different values: which should win is a guess, so neither does."""
    with pytest.raises(ConfigError) as info:
        build_config({}, write(tmp_path, text), environ={})
    message = str(info.value)
    assert "mqtt_host is set twice with different values" in message and "keep one" in message
    assert "'a'" in message and "'b'" in message


def test_one_key_with_the_same_value_twice_is_fine(tmp_path):
    cfg = build_config({}, write(tmp_path, 'mqtt_host = "a"\n[digitspot]\nmqtt-host = "a"\n[edge]\nmqtt_port = 1\n'),
                       environ={})
    assert cfg.mqtt_host == "a" and cfg.mqtt_port == 1


def test_the_password_file_path_is_never_echoed(tmp_path):
    """A password typed where its file's path belongs must not reach the terminal or a log."""
    with pytest.raises(ConfigError) as info:
        build_config({"mqtt_username": "u", "mqtt_password_file": "s3cret-pw"}, None, environ={})
    assert "s3cret-pw" not in str(info.value) and "mqtt_password_file cannot be read" in str(info.value)


def test_password_from_file_or_env_never_in_repr_or_public_dict(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("file-secret\n")
    cfg = build_config({"mqtt_username": "u", "mqtt_password_file": str(pw)}, None,
                       environ={"DIGITSPOT_MQTT_PASSWORD": "env-secret"})
    assert cfg.mqtt_password == "file-secret"  # the file wins over the env var
    assert "file-secret" not in repr(cfg) and "file-secret" not in str(cfg.public_dict())
    cfg = build_config({"mqtt_username": "u"}, None, environ={"DIGITSPOT_MQTT_PASSWORD": "env-secret"})
    assert cfg.mqtt_password == "env-secret"
    assert build_config({}, None, environ={"DIGITSPOT_MQTT_PASSWORD": ""}).mqtt_password is None


def test_every_key_is_a_run_flag():
    out = run_cli(["run", "--help"]).stdout.decode()
    for key in KEYS:
        flag = "--" + key.replace("_", "-")
        assert flag in out, flag
    assert "--mqtt-password " not in out  # the password is never a flag
    assert set(KEYS) == {f for f in EdgeConfig.__dataclass_fields__ if f != "mqtt_password"}


def test_cli_config_error_exit_78(tmp_path):
    result = run_cli(["run", "--config", str(write(tmp_path, "queue_size = 0\n"))])
    assert result.returncode == 78
    err = result.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "queue_size" in err[0]
    result = run_cli(["run", "--config", str(tmp_path / "missing.toml")])
    assert result.returncode == 78


def test_cli_flag_beats_env(tmp_path, fixture_model):
    """A flag overrides the env var for the running daemon too (--no-mqtt here vs DIGITSPOT_NO_MQTT)."""
    result = run_cli(["run", "--model", str(fixture_model), "--source", "stdin", "--print", "--mqtt",
                      "--mqtt-port", "1", "--log-level", "debug"], env={"DIGITSPOT_NO_MQTT": "true"}, input=b"",
                     timeout=60)
    assert result.returncode == 0
    assert "MQTT broker 127.0.0.1:1" in result.stderr.decode() or "localhost:1" in result.stderr.decode()


# --- one declaration per setting: flags, help and the docs table come from the dataclass -------------

def test_every_field_declares_its_help():
    for f in dataclasses.fields(EdgeConfig):
        assert f.metadata.get("help", "").strip(), f"{f.name} has no help text in its field metadata"


def test_run_options_are_the_dataclass_fields():
    options = {p.name: p for p in run.params if p.name not in ("config_file", "help")}
    assert set(options) == set(KEYS)
    for s in settings():
        if not s.flags:
            assert s.key == "mqtt_password"  # the secret: environment or file only
            continue
        assert tuple(options[s.key].opts + options[s.key].secondary_opts) == s.flags, s.key
        assert options[s.key].default is None, f"{s.key}: an unset flag must leave the lower layers in charge"


def test_help_shows_the_effective_defaults():
    out = " ".join(run_cli(["run", "--help"]).stdout.decode().split())  # undo click's line wrapping
    assert "MQTT broker port [default: 1883]" in out
    assert "--no-mqtt / --mqtt" in out and "--source [mic|file|stdin]" in out
    assert "[default: the model card's (0.5 for the shipped model)]" in out  # min_confidence
    assert "[default: the model card's (0.75 for the shipped model)]" in out  # early_confidence


def test_settings_markdown_has_a_row_per_setting():
    table = settings_markdown()
    lines = table.strip().splitlines()
    assert lines[0] == "| Key / flag | Environment variable | Default | Meaning |"
    assert len(lines) == 2 + 1 + len(dataclasses.fields(EdgeConfig))  # header, --config, one row per field
    assert "| `mqtt_port` / `--mqtt-port` | `DIGITSPOT_MQTT_PORT` | `1883` | MQTT broker port |" in lines
    assert "| `realtime` / `--realtime`, `--no-realtime` | `DIGITSPOT_REALTIME` | `false` |" in table
    assert "`DIGITSPOT_MQTT_PASSWORD`" in table and "`--mqtt-password`" not in table
    assert "the model card's (0.5 for the shipped model)" in table
    assert "digitspot/&lt;device_id&gt;" in table  # no raw <tag> that markdown would swallow


# --- thresholds travel with the model ---------------------------------------------------------------

def test_threshold_keys_default_to_the_card():
    # every card threshold has a setting of the same name that defaults to the card's
    assert set(THRESHOLD_KEYS) | {"sequence_gap_ms"} == {f.name for f in dataclasses.fields(Thresholds)}
    assert EdgeConfig.__dataclass_fields__["sequence_gap_ms"].default is None
    cfg = build_config({}, None, environ={})
    for key in THRESHOLD_KEYS:
        assert EdgeConfig.__dataclass_fields__[key].default is None and getattr(cfg, key) is None
    card = Thresholds(min_confidence=0.4, early_confidence=0.8)
    assert effective_thresholds(cfg, card) == card
    cfg = build_config({"early_confidence": 0.9}, None, environ={"DIGITSPOT_MIN_CONFIDENCE": "0.6"})
    assert effective_thresholds(cfg, card) == Thresholds(min_confidence=0.6, early_confidence=0.9)


def test_cards_recommend_thresholds(fixture_model):
    assert load_card(shipped_model_path()).thresholds == Thresholds(min_confidence=0.5, early_confidence=0.75)
    assert load_card(fixture_model).thresholds == Thresholds(min_confidence=0.4, early_confidence=0.75)


def _card_data(**changes) -> dict:
    data = json.loads(card_path_for(shipped_model_path()).read_text())
    data.update(changes)
    return data


def test_card_without_thresholds_gets_the_built_in_defaults():
    data = _card_data()
    del data["thresholds"]
    assert ModelCard.from_dict(data).thresholds == Thresholds() == Thresholds(0.5, 0.75)
    partial = ModelCard.from_dict(_card_data(thresholds={"min_confidence": 0.3, "later_rule": 1.0}))
    assert partial.thresholds == Thresholds(min_confidence=0.3, early_confidence=0.75)
    assert ModelCard.from_dict(partial.to_dict()) == partial  # written as read


@pytest.mark.parametrize("thresholds,fragment", [
    ({"min_confidence": 1.5}, "between 0 and 1"),
    ({"min_confidence": "high"}, "not a number"),
    ({"early_confidence": True}, "not a number"),
    ({"min_confidence": 0.8, "early_confidence": 0.6}, "below min_confidence"),
    ([0.5, 0.75], "not a JSON object"),
])
def test_bad_card_thresholds_are_refused(thresholds, fragment):
    with pytest.raises(ModelError) as info:
        ModelCard.from_dict(_card_data(thresholds=thresholds))
    assert fragment in str(info.value) and "re-export" in str(info.value)


def test_daemon_runs_at_the_card_thresholds_unless_configured(fixture_model):
    args = ["run", "--model", str(fixture_model), "--source", "stdin", "--no-mqtt", "--log-level", "info"]
    result = run_cli(args, input=b"", timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert "thresholds: min_confidence 0.4 (model card), early_confidence 0.75 (model card)" in result.stderr.decode()
    result = run_cli(args + ["--min-confidence", "0.6"], input=b"", timeout=60,
                     env={"DIGITSPOT_EARLY_CONFIDENCE": "0.9"})
    assert result.returncode == 0, result.stderr.decode()
    assert "thresholds: min_confidence 0.6 (configured), early_confidence 0.9 (configured)" in result.stderr.decode()

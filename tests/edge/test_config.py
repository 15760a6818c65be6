"""Configuration precedence (flags > DIGITSPOT_* env > TOML > defaults), validation and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

from digitspot.edge.config import KEYS, EdgeConfig, build_config
from digitspot.edge.errors import EXIT_CONFIG, ConfigError


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
])
def test_bad_config_is_a_config_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as info:
        build_config({}, write(tmp_path, text), environ={})
    assert fragment in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG == 78


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

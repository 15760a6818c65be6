"""systemd/digitspot.service: verified and scored by systemd-analyze, and its ExecStart run as written.

systemd is not PID 1 here, so the sandbox itself cannot be exercised; what can drift is checked:
- `systemd-analyze verify` accepts the unit, `systemd-analyze security --offline=yes` scores it <= 2.5;
- the ExecStart line, with the unit's Environment= and EnvironmentFile=, is executed exactly as written
  against a test Mosquitto (password required) and a file source, with NOTIFY_SOCKET and WATCHDOG_USEC
  set as systemd would (Type=notify, WatchdogSec=): READY=1 and WATCHDOG=1 must arrive, digits must be
  published, and the process must exit 0 at the end of the file.

The one substitution (also what the Ansible role does when it installs the unit): the path prefixes
/opt/digitspot (install prefix) and /etc/digitspot (configuration) are replaced by temporary
directories. Here <prefix>/venv is a symlink to the project venv (editable install of this tree) and
<prefix>/model holds the shipped model; <config>/edge.toml selects the file source and the test broker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from deploy_helpers import ROOT, SHIPPED_MODEL_UNDER_TEST, VENV_BIN

UNIT = ROOT / "systemd" / "digitspot.service"
INSTALL_PREFIX, CONFIG_DIR = "/opt/digitspot", "/etc/digitspot"
MAX_EXPOSURE = 2.5


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax: [Section], Key=Value, repeated keys accumulate, '#'/';' comments, '\\' continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    logical = re.sub(r"\\\n", " ", text)
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def rewrite(text: str, prefix: Path, config: Path) -> str:
    return text.replace(INSTALL_PREFIX, str(prefix)).replace(CONFIG_DIR, str(config))


def parse_env_assignments(value: str) -> dict[str, str]:
    """Environment= takes space-separated VAR=value words with shell-like quoting."""
    return dict(word.split("=", 1) for word in shlex.split(value))


def parse_environment_file(path: Path) -> dict[str, str]:
    """EnvironmentFile= lines: VAR=value, VAR="value with \\" escapes", comments ignored."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return env


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


@pytest.fixture
def installed_layout(tmp_path: Path, ship_model: Path) -> tuple[Path, Path]:
    """Temporary stand-ins for /opt/digitspot and /etc/digitspot."""
    prefix, config = tmp_path / "opt", tmp_path / "etc"
    (prefix / "model").mkdir(parents=True)
    config.mkdir()
    (prefix / "venv").symlink_to(VENV_BIN.parent)
    for suffix in ("", ".json"):
        (prefix / "model" / f"digitspot.onnx{suffix}").write_bytes(Path(f"{ship_model}{suffix}").read_bytes())
    return prefix, config


def test_unit_has_the_required_settings(unit) -> None:
    service = unit["Service"]
    first = {key: values[0] for key, values in service.items()}
    assert first["Type"] == "notify" and "WatchdogSec" in first and first["Restart"] == "on-failure"
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= unit["Unit"].keys()
    assert first["User"] != "root" and first["SupplementaryGroups"] == "audio"
    assert first["DevicePolicy"] == "closed" and first["DeviceAllow"] == "char-alsa rw"
    assert first["CapabilityBoundingSet"] == "" and first["NoNewPrivileges"] == "yes"
    assert first["ProtectSystem"] == "strict" and first["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "MemoryDenyWriteExecute" not in service  # off until measured on aarch64; the unit says why
    assert "MemoryDenyWriteExecute" in UNIT.read_text()
    assert service["ExecStart"] == [f"{INSTALL_PREFIX}/venv/bin/digitspot-edge run --config {CONFIG_DIR}/edge.toml"]


def test_systemd_analyze_verify(installed_layout) -> None:
    prefix, config = installed_layout
    (config / "secrets.env").write_text("")
    unit_file = config.parent / "digitspot.service"
    unit_file.write_text(rewrite(UNIT.read_text(), prefix, config))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True,
                          check=False)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "digitspot" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    unit_file = tmp_path / "digitspot.service"
    unit_file.write_text(UNIT.read_text())
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit_file)],
                          capture_output=True, text=True, check=False)
    m = re.search(r"Overall exposure level for digitspot\.service:\s+([\d.]+)\s+(\w+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=yes: exposure {score} {m.group(2)} (limit {MAX_EXPOSURE})")
    assert score <= MAX_EXPOSURE, proc.stdout


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET; records what the service sends."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def lines(self) -> list[str]:
        return [line for _, msg in self.messages for line in msg.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


def test_execstart_runs_as_written(unit, installed_layout, fsdd_test_files: list[Path], tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from digitspot.edge.devtools.local_broker import LocalBroker

    prefix, config = installed_layout
    service = {key: [rewrite(v, prefix, config) for v in values] for key, values in unit["Service"].items()}
    # Three official test takes with silence between them, as a file source (what a mic would hear).
    words = [fsdd_test_files[i] for i in (3, 141, 277)]
    expected = [int(p.name[0]) for p in words]
    rate = 8000
    gap = np.zeros(int(0.8 * rate), dtype=np.float32)
    pieces = [gap]
    for path in words:
        audio, sr = sf.read(path, dtype="float32")
        assert sr == rate
        pieces += [audio, gap]
    stream = tmp_path / "words.wav"
    sf.write(stream, np.concatenate(pieces), rate)

    user, password = "pi-kitchen", "s3cret-from-environment-file"
    with LocalBroker(users={user: password}) as broker:
        device_id = "unit-test"
        (config / "edge.toml").write_text(
            f'model = "{prefix}/model/digitspot.onnx"\nsource = "file"\ninput = "{stream}"\n'
            f'device_id = "{device_id}"\nmqtt_host = "{broker.host}"\nmqtt_port = {broker.port}\n'
            f'mqtt_username = "{user}"\nlog_level = "info"\n'
        )
        (config / "secrets.env").write_text(f'# as the playbook writes it\nDIGITSPOT_MQTT_PASSWORD="{password}"\n')
        (config / "secrets.env").chmod(0o600)

        # The environment systemd would give the service: its default PATH, Environment=, EnvironmentFile=,
        # and for Type=notify + WatchdogSec= the notify socket and the watchdog period.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        for value in service.get("Environment", []):
            env.update(parse_env_assignments(value))
        for value in service.get("EnvironmentFile", []):
            optional = value.startswith("-")
            path = Path(value.lstrip("-"))
            if path.exists() or not optional:
                env.update(parse_environment_file(path))
        assert env["DIGITSPOT_MQTT_PASSWORD"] == password
        watchdog = service["WatchdogSec"][0]
        watchdog_s = float(watchdog.rstrip("s")) if watchdog.endswith("s") else float(watchdog)
        notify = NotifySocket(tmp_path / "notify.sock")
        env["NOTIFY_SOCKET"] = str(notify.path)
        env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))

        received: list[tuple[str, bytes]] = []
        subscribed, offline = threading.Event(), threading.Event()

        def on_message(client, userdata, msg) -> None:
            received.append((msg.topic, msg.payload))
            if msg.topic.endswith("/status") and msg.payload == b"offline" and any(
                    t.endswith("/status") and p == b"online" for t, p in received):
                offline.set()  # the service's last word: it went online and is now offline

        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="unit-test-subscriber")
        sub.username_pw_set(user, password)
        sub.on_connect = lambda c, *a: c.subscribe(f"digitspot/{device_id}/#", qos=1)
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = on_message
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        try:
            assert subscribed.wait(10), "the test subscriber got no SUBACK"
            argv = shlex.split(service["ExecStart"][0])
            proc = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
            offline.wait(10)  # delivered after the process exits; asserted below
        finally:
            sub.loop_stop()
            sub.disconnect()
            notify.close()

    log = proc.stderr
    assert proc.returncode == 0, f"ExecStart exited {proc.returncode}:\n{log[-3000:]}"
    assert password not in log + proc.stdout
    lines = notify.lines()
    assert "READY=1" in lines, f"no READY=1 on NOTIFY_SOCKET: {lines}"
    print(f"sd_notify: {len(lines)} lines, READY=1, {lines.count('WATCHDOG=1')} x WATCHDOG=1")
    digits = [json.loads(payload)["digit"] for topic, payload in received if topic.endswith("/digit")]
    statuses = [payload.decode() for topic, payload in received if topic.endswith("/status")]
    print(f"ExecStart as written: published digits {digits}, expected {expected}; status {statuses}")
    assert "online" in statuses and statuses[-1] == "offline"
    if SHIPPED_MODEL_UNDER_TEST:
        assert digits == expected, log[-3000:]  # the shipped model hears these three takes right
    else:
        assert len(digits) == len(expected), log[-3000:]


def test_execstart_is_the_cli_users_run() -> None:
    """The flags in ExecStart exist in `digitspot-edge run --help` (a renamed flag breaks the unit)."""
    argv = shlex.split(parse_unit(UNIT.read_text())["Service"]["ExecStart"][0])
    helptext = subprocess.run([str(VENV_BIN / "digitspot-edge"), *argv[1:2], "--help"], capture_output=True,
                              text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    for flag in (a for a in argv[2:] if a.startswith("--")):
        assert flag in helptext

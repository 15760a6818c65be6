"""Helpers for the edge daemon tests: a recording MQTT subscriber, the daemon as a subprocess, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "fixture.onnx"
CLI = Path(sys.executable).parent / "digitspot-edge"


def cli_command() -> list[str]:
    if CLI.exists():
        return [str(CLI)]
    found = shutil.which("digitspot-edge")
    if not found:
        pytest.fail("digitspot-edge is not installed in this environment: pip install -e .")
    return [found]





@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() on arrival

    def json(self) -> dict:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """An independent MQTT client in the test process that records every message with its arrival time."""

    host: str
    port: int
    topics: list[str]
    client_id: str | None = None
    clean: bool = True
    tls_ca: Path | None = None
    username: str | None = None
    password: str | None = None
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self):
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # every topic's SUBACK is back: messages from now on arrive
        self._unacked: set[int] = set()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id or "",
                                  clean_session=self.clean, protocol=mqtt.MQTTv311)
        if self.tls_ca:
            self.client.tls_set(ca_certs=str(self.tls_ca))
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *a: self.connected.clear()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            with self.lock:
                self._unacked = {client.subscribe(t, qos=1)[1] for t in self.topics}
            self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        if any(rc.is_failure for rc in reason_code_list):
            return  # refused: `subscribed` stays unset and start() says so
        with self.lock:
            self._unacked.discard(mid)
            if not self._unacked:
                self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def start(self, timeout: float = 10) -> Subscriber:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(timeout), "test subscriber could not connect"
        assert self.subscribed.wait(timeout), f"test subscriber got no SUBACK for {self.topics}"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, suffix: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        with self.lock:
            return bool(predicate(list(self.messages)))


def retained(host: str, port: int, topic: str, timeout: float = 5, **kw) -> bytes | None:
    """The retained payload on ``topic`` right now (a fresh subscription), or None."""
    sub = Subscriber(host, port, [topic], **kw).start()
    try:
        sub.wait_for(lambda ms: any(m.topic == topic for m in ms), timeout)
        got = [m for m in sub.messages if m.topic == topic]
        return got[-1].payload if got else None
    finally:
        sub.stop()





class Daemon:
    """``digitspot-edge run ...`` as a subprocess; stderr goes to a file so pipes never fill up."""

    def __init__(self, args: list[str], tmp_path: Path, env: dict | None = None, stdin=subprocess.DEVNULL,
                 name: str = "daemon"):
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.stdout_path = tmp_path / f"{name}.stdout"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_") and k != "NOTIFY_SOCKET"}
        full_env.update(env or {})
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cli_command() + ["run"] + args, stdin=stdin, stdout=self._out,
                                     stderr=self._err, env=full_env)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.flush()
            self._out.flush()

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")

    def events(self) -> list[dict]:
        self._out.flush()
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._err.close()
        self._out.close()





def run_cli(args: list[str], timeout: float = 120, env: dict | None = None, input: bytes | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_")}
    full_env.update(env or {})
    return subprocess.run(cli_command() + args, capture_output=True, timeout=timeout, env=full_env, input=input,
                          check=False)


def percentiles(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "n/a"
    v = np.array(values)
    return (f"n={len(v)} p50={np.percentile(v, 50):.0f} ms p90={np.percentile(v, 90):.0f} ms "
            f"p95={np.percentile(v, 95):.0f} ms max={v.max():.0f} ms")

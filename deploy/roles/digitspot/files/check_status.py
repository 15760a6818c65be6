#!/usr/bin/env python3
"""Health check for a deployed digitspot daemon: wait until its retained status topic says ``online``.

Reads the daemon's own configuration (``--config``, plus ``DIGITSPOT_MQTT_PASSWORD``) through
``digitspot.edge.config``, so it talks to the same broker, with the same TLS settings and credentials, on the
same topic prefix as the daemon. Run with the daemon's venv:

    /opt/digitspot/venv/bin/python /opt/digitspot/bin/digitspot-check-status --config /etc/digitspot/edge.toml

Right after a restart the retained value may still be the old instance's ``offline``; the check keeps
listening until ``online`` arrives or ``--timeout`` seconds pass.
Exit 0: online. Exit 1: not online in time (the last value seen is printed). Exit 69: broker unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


def state_of(payload: bytes) -> str:
    """``online``/``offline`` from a plain payload or a JSON object with a ``state``/``status`` field."""
    text = payload.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        return str(data.get("state", data.get("status", text)))
    return str(data)


def main() -> int:
    parser = argparse.ArgumentParser(description="Wait until a digitspot daemon reports online on MQTT.")
    parser.add_argument("--config", type=Path, required=True, help="the daemon's edge.toml")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for online")
    args = parser.parse_args()

    if os.environ.get("DIGITSPOT_MQTT_PASSWORD") == "":
        del os.environ["DIGITSPOT_MQTT_PASSWORD"]  # an empty password means: none
    import paho.mqtt.client as mqtt

    from digitspot.edge.config import build_config
    from digitspot.edge.errors import DigitspotError

    try:
        cfg = build_config(config_file=args.config)
    except DigitspotError as exc:
        print(f"digitspot-check-status: {exc}", file=sys.stderr)
        return 78
    topic = f"{cfg.prefix}/status"
    seen: list[str] = []
    online = threading.Event()
    connect_error: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            connect_error.append(str(reason_code))
            online.set()
            return
        client.subscribe(topic, qos=1)

    def on_message(client, userdata, message):
        seen.append(state_of(message.payload))
        if seen[-1] == "online":
            online.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"digitspot-check-{os.getpid()}")
    if cfg.mqtt_username:
        client.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
    if cfg.mqtt_tls:
        client.tls_set(
            ca_certs=str(cfg.mqtt_ca_file) if cfg.mqtt_ca_file else None,
            certfile=str(cfg.mqtt_cert_file) if cfg.mqtt_cert_file else None,
            keyfile=str(cfg.mqtt_key_file) if cfg.mqtt_key_file else None,
        )
        client.tls_insecure_set(cfg.mqtt_tls_insecure)
    client.on_connect = on_connect
    client.on_message = on_message
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            client.connect(cfg.mqtt_host, cfg.mqtt_port, keepalive=30)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                print(f"digitspot-check-status: broker {cfg.mqtt_host}:{cfg.mqtt_port} unreachable ({exc})",
                      file=sys.stderr)
                return 69
            time.sleep(2)
    client.loop_start()
    try:
        online.wait(max(0.0, deadline - time.monotonic()))
    finally:
        client.loop_stop()
        client.disconnect()
    if connect_error:
        print(f"digitspot-check-status: broker {cfg.mqtt_host}:{cfg.mqtt_port} refused us: {connect_error[0]}",
              file=sys.stderr)
        return 69
    if seen and seen[-1] == "online":
        print(f"{topic}: online")
        return 0
    print(f"{topic}: {seen[-1] if seen else 'nothing received'} after {args.timeout:.0f} s "
          "(is the daemon running? journalctl -u digitspot)")
    return 1


if __name__ == "__main__":
    sys.exit(main())

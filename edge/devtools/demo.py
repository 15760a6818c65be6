"""``make demo``: the whole product on one machine, in about 25 seconds.

A private Mosquitto on a free loopback port, the daemon (``digitspot-edge run``) listening to the
bundled recording in real time, and an independent MQTT subscriber that prints each digit as it
arrives with its confidence and the time from the end of the spoken word to arrival. At the end of
the recording the daemon shuts down cleanly (status ``offline``) and the broker is stopped.

    python -m digitspot.edge.devtools.demo [--input WAV] [--model ONNX]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from digitspot.edge.classifier import default_model_path
from digitspot.edge.devtools.local_broker import LocalBroker

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = ROOT / "artifacts" / "samples" / "demo_digits.wav"


def daemon_command() -> list[str]:
    exe = Path(sys.executable).parent / "digitspot-edge"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("digitspot-edge")
    return [found] if found else [sys.executable, "-m", "digitspot.edge"]


def labels_of(wav: Path) -> list[tuple[str, float]]:
    """(digit, end in seconds) from the recording's ``.txt`` label file (``7  ends  12.34 s ...``), if any."""
    labels = wav.with_suffix(".txt")
    if not labels.is_file():
        return []
    out = []
    for line in labels.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and parts[1] == "ends":
            out.append((parts[0], float(parts[2])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="recording to play (WAV/FLAC/OGG)")
    ap.add_argument("--model", type=Path, default=None, help="model (default: the shipped artifact)")
    ap.add_argument("--device-id", default="demo")
    args = ap.parse_args()
    model = args.model or default_model_path()
    if not model.is_file():
        print(f"demo: no model at {model}: run `make train` (or pass --model)", file=sys.stderr)
        return 66
    if not args.input.is_file():
        print(f"demo: no recording at {args.input}", file=sys.stderr)
        return 66

    prefix = f"digitspot/{args.device_id}"
    labels = labels_of(args.input)
    heard: list[str] = []
    offline = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(f"{prefix}/#", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        arrived = time.time()
        if msg.topic.endswith("/digit"):
            event = json.loads(msg.payload)
            # From the end of speech as the daemon heard it (FSDD takes carry up to ~0.1 s of their own
            # trailing silence, so their file ends are not the end of the word).
            after_end = arrived * 1000 - event["speech_end"]
            heard.append(str(event["digit"]))
            top = ", ".join(f"{t['digit']}:{t['score']:.2f}" for t in event["top3"])
            print(f"  heard {event['digit']}   confidence {event['confidence']:.2f}   "
                  f"{after_end:4.0f} ms after the end of speech   (seq {event['seq']}; top-3 {top})", flush=True)
        elif msg.topic.endswith("/status"):
            state = msg.payload.decode(errors="replace")
            print(f"  status: {state}{' (retained)' if msg.retain else ''}", flush=True)
            if state == "offline" and not msg.retain:
                offline.set()

    with LocalBroker() as broker:
        print(f"demo: private Mosquitto on {broker.host}:{broker.port}")
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="digitspot-demo-subscriber")
        sub.on_connect, sub.on_subscribe, sub.on_message = on_connect, on_subscribe, on_message
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        subscribed.wait(5)
        cmd = daemon_command() + [
            "run", "--model", str(model), "--source", "file", "--input", str(args.input), "--realtime",
            "--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--device-id", args.device_id,
            "--log-level", "warning",
        ]
        print(f"demo: {' '.join(cmd[:1] + cmd[1:2])} ... playing {args.input.name} in real time")
        print(f"demo: subscribed to {prefix}/#")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_")}
        daemon = subprocess.Popen(cmd, env=env)
        try:
            code = daemon.wait()
        except KeyboardInterrupt:
            daemon.terminate()
            code = daemon.wait(10)
        offline.wait(3)
        sub.disconnect()
        sub.loop_stop()
    expected = "".join(d for d, _ in labels)
    print(f"demo: daemon exited with {code}; heard {''.join(heard) or 'nothing'}"
          + (f" (spoken: {expected})" if expected else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())

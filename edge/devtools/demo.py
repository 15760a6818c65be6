"""``make demo``: the whole product on one machine, in about 25 seconds.

A private Mosquitto on a free loopback port, the daemon (``digitspot-edge run``) listening to the
bundled recording in real time, and an independent MQTT subscriber that prints each digit as it
arrives with its confidence and the time from the end of the spoken word to arrival. At the end of
the recording the daemon shuts down cleanly (status ``offline``) and the broker is stopped.

The demo then compares the digits heard with the digits spoken (``--expect FILE``; by default the
recording's ``.txt`` label file, when there is one) and fails when they differ, with one line naming
the digits that differ. Exit codes: 0 all digits right; 1 the digits differ; the daemon's own code when
the daemon fails; 66 a missing model, recording or expect file; 69 the subscriber cannot reach the broker.

    python -m digitspot.edge.devtools.demo [--input WAV] [--model ONNX] [--expect FILE]
"""

from __future__ import annotations

import argparse
import difflib
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

# The bundled recording lives in the repository (artifacts/samples/), not in the wheel.
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INPUT = ROOT / "artifacts" / "samples" / "demo_digits.wav"

EXIT_MISMATCH = 1  # the digits heard differ from the digits spoken
EXIT_NOINPUT = 66
EXIT_UNAVAILABLE = 69


def daemon_command() -> list[str]:
    exe = Path(sys.executable).parent / "digitspot-edge"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("digitspot-edge")
    return [found] if found else [sys.executable, "-m", "digitspot.edge"]


def spoken_digits(path: Path) -> str:
    """The digits spoken, in order, from a label file.

    Either the bundled recordings' format, one line per word (``7  ends  12.34 s  (7_lucas_0.wav)``,
    other lines ignored), or a file holding only the digits (``427190583671``; whitespace ignored).
    """
    text = path.read_text(encoding="utf-8")
    labelled = [parts[0] for parts in map(str.split, text.splitlines())
                if len(parts) >= 3 and len(parts[0]) == 1 and parts[0].isdigit() and parts[1] == "ends"]
    if labelled:
        return "".join(labelled)
    bare = "".join(text.split())
    if bare.isdigit():
        return bare
    raise ValueError(f"{path} names no digits: write lines like `7  ends  12.34 s` or only the digits, e.g. 4271")


def describe_mismatch(spoken: str, heard: str) -> str:
    """One line naming the digits that differ.

    The two sequences are aligned first, so one missed or extra word is reported as that, not as every
    later digit being wrong. Positions count the spoken digits from 1.
    """
    differences = []
    matcher = difflib.SequenceMatcher(a=spoken, b=heard, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        where = f"spoken #{i1 + 1}" if i2 - i1 == 1 else f"spoken #{i1 + 1}-{i2}"
        if tag == "replace":
            differences.append(f"heard {heard[j1:j2]} for {spoken[i1:i2]} ({where})")
        elif tag == "delete":
            differences.append(f"missed {spoken[i1:i2]} ({where})")
        elif tag == "insert":
            differences.append(f"extra {heard[j1:j2]} (after spoken #{i1})" if i1 else
                               f"extra {heard[j1:j2]} (before the first spoken)")
    return (f"demo: FAILED: heard {heard or 'nothing'} but spoken {spoken}: "
            + "; ".join(differences))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="recording to play (WAV/FLAC/OGG)")
    ap.add_argument("--model", type=Path, default=None, help="model (default: the shipped artifact)")
    ap.add_argument("--expect", type=Path, default=None,
                    help="the digits spoken: a label file (`7  ends  12.34 s` lines) or only the digits "
                         "(default: the recording's .txt file, when there is one)")
    ap.add_argument("--device-id", default="demo")
    args = ap.parse_args(argv)
    model = args.model or default_model_path()
    if not model.is_file():
        print(f"demo: no model at {model}: pass --model, or reinstall digitspot (the package carries it)",
              file=sys.stderr)
        return EXIT_NOINPUT
    if not args.input.is_file():
        print(f"demo: no recording at {args.input}: pass --input WAV", file=sys.stderr)
        return EXIT_NOINPUT
    expect = args.expect or args.input.with_suffix(".txt")
    if args.expect is not None and not expect.is_file():
        print(f"demo: no expect file at {expect}: pass the file that lists the digits spoken", file=sys.stderr)
        return EXIT_NOINPUT
    try:
        spoken = spoken_digits(expect) if expect.is_file() else None
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_NOINPUT

    prefix = f"digitspot/{args.device_id}"
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
        if not subscribed.wait(10):
            sub.loop_stop()
            print(f"demo: the subscriber could not subscribe on {broker.host}:{broker.port}: "
                  "is mosquitto working? (`mosquitto -h`)", file=sys.stderr)
            return EXIT_UNAVAILABLE
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
    heard_digits = "".join(heard)
    if code != 0:
        print(f"demo: FAILED: the daemon exited with {code}; heard {heard_digits or 'nothing'}")
        return code if code > 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it
    if spoken is None:
        print(f"demo: heard {heard_digits or 'nothing'} (no {expect.name} beside the recording and no --expect: "
              "not checked)")
        return 0
    if heard_digits != spoken:
        print(describe_mismatch(spoken, heard_digits))
        return EXIT_MISMATCH
    print(f"demo: OK: every digit heard as spoken: {heard_digits} ({len(spoken)} of {len(spoken)})")
    return 0

if __name__ == "__main__":
    sys.exit(main())

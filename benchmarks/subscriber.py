"""An independent MQTT subscriber process that stamps every message's arrival on CLOCK_MONOTONIC.

    python -m digitspot.benchmarks.subscriber --host 127.0.0.1 --port 1883 --topic 'digitspot/x/#'

Prints one JSON line per message: ``{"t_ns": ..., "topic": ..., "payload": ...}`` (payload as text),
after a ``{"subscribed": true}`` line once the broker acknowledged the subscription. CLOCK_MONOTONIC is
one clock for the whole Linux system, so these stamps compare directly with the feeder's.
It runs as its own process so that its timing does not share a GIL or a scheduler slot with the
feeder, and so it sees what any other subscriber on the machine would see.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import click


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@click.command()
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=1883, type=int)
@click.option("--topic", "topics", multiple=True, required=True)
@click.option("--qos", default=1, type=int)
def main(host: str, port: int, topics: tuple[str, ...], qos: int) -> None:
    import paho.mqtt.client as mqtt

    out = sys.stdout
    lock = threading.Lock()
    done = threading.Event()

    def emit(record: dict) -> None:
        with lock:
            out.write(json.dumps(record) + "\n")
            out.flush()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            emit({"error": f"connect failed: {reason_code}"})
            return
        client.subscribe([(t, qos) for t in topics])

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        emit({"subscribed": True, "t_ns": now_ns()})

    def on_message(client, userdata, message):
        t = now_ns()  # first thing: the arrival stamp
        emit({"t_ns": t, "topic": message.topic, "retained": bool(message.retain),
              "payload": message.payload.decode("utf-8", errors="replace")})

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"digitspot-bench-sub-{now_ns()}")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    client.connect(host, port, keepalive=30)
    client.loop_start()
    done.wait()
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()

"""MQTT: digits out in order, availability, info and Home Assistant discovery; survives broker outages.

paho-mqtt 2.x (CallbackAPIVersion.VERSION2) with ``connect_async`` + ``loop_start``: paho's network
thread connects, reconnects with capped backoff (``reconnect_delay_set``) and calls us back.

Ordering and loss: digits wait in our bounded queue (``queue_size``, oldest dropped with a counted
warning) and are handed to paho only while connected, by one publisher thread. paho keeps what it
was given until the broker's PUBACK and re-sends it first after a reconnect; until those re-sends
are acknowledged no newer digit is handed over, so subscribers see digits in ``seq`` order. A digit
may arrive twice around an outage (QoS 1 is at-least-once): dedupe by ``(boot_id, seq)``.

Digit strings (``<prefix>/sequence``, ctc-stream models) go through the same queue, so a string reaches
the broker after the digits it is made of, and never before them.

Locks: paho calls ``on_publish`` while holding its own message lock, so nothing here calls paho while
holding our lock (that would deadlock against the audio thread).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from digitspot.edge.config import EdgeConfig, make_tls_context

log = logging.getLogger("digitspot.mqtt")

ONLINE = "online"
OFFLINE = "offline"
HA_STATUS_TOPIC_SUFFIX = "status"
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
# Session takeover: MQTT 3.1.1 brokers end a session, without saying why, when another client connects
# with the same client id. Two daemons with one device_id then take the id from each other at every
# reconnect, each session lasting about one reconnect delay. This many sessions in a row that the broker
# ended within TAKEOVER_SESSION_S of accepting them is taken for that; the reconnects then back off from
# TAKEOVER_BACKOFF_S (doubling up to TAKEOVER_BACKOFF_MAX_S) so that the other client keeps its session.
TAKEOVER_SESSIONS = 3
TAKEOVER_SESSION_S = 10.0
TAKEOVER_BACKOFF_S = 60
TAKEOVER_BACKOFF_MAX_S = 600


@dataclass
class Outgoing:
    topic: str
    payload: str
    seq: int


class MqttPublisher:
    """Owns the paho client; ``publish_digit`` is safe to call from the audio thread at any time."""

    def __init__(self, cfg: EdgeConfig, info_json: Callable[[], str], discovery_json: Callable[[], str] | None,
                 max_inflight: int = 20, extra_discovery: Callable[[], list[tuple[str, str]]] | None = None):
        self.cfg = cfg
        self.prefix = cfg.prefix
        self.status_topic = f"{self.prefix}/status"
        self.digit_topic = f"{self.prefix}/digit"
        self.info_topic = f"{self.prefix}/info"
        self.discovery_topic = f"{cfg.discovery_prefix}/event/{cfg.device_id}/digit/config"
        self.ha_status_topic = f"{cfg.discovery_prefix}/{HA_STATUS_TOPIC_SUFFIX}"
        self.info_json = info_json
        self.discovery_json = discovery_json if cfg.discovery else None
        # more retained discovery messages, (topic, payload): the digit strings' entity and code triggers
        self.extra_discovery = extra_discovery if cfg.discovery else None
        self.sequence_topic = f"{self.prefix}/sequence"
        self.max_inflight = max_inflight
        self.cond = threading.Condition()
        self.pending: collections.deque[Outgoing] = collections.deque()
        self.unacked: list[tuple[Outgoing, mqtt.MQTTMessageInfo]] = []
        self.connected = False
        self.resync = False  # after a reconnect: wait for paho's re-sends before newer digits
        self.stopping = False
        self.dropped = 0
        self.delivered = 0
        self.available = True  # False while there is no microphone: status says offline
        self._last_problem: str | None = None
        self._ever_connected = False
        self._connected_at = 0.0  # time.monotonic() of the last accepted connection
        self.short_sessions = 0  # sessions in a row that the broker ended within TAKEOVER_SESSION_S
        self.takeover_backoff = 0  # seconds between reconnects while another client holds our id; 0: none
        self.client = self._make_client()
        self.thread = threading.Thread(target=self._publisher_loop, name="mqtt-publisher", daemon=True)

    # -- setup ---------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        if cfg.mqtt_username is not None:
            client.username_pw_set(cfg.mqtt_username, cfg.mqtt_password)
        context = make_tls_context(cfg)  # a ConfigError for files OpenSSL cannot use
        if context is not None:
            client.tls_set_context(context)
            if cfg.mqtt_tls_insecure:
                client.tls_insecure_set(True)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.max_inflight_messages_set(self.max_inflight + 10)  # + status/info/discovery
        client.max_queued_messages_set(0)
        # A bug in one of our callbacks must not kill paho's network thread (and with it every future
        # message): paho logs the exception through our logger and carries on.
        client.suppress_exceptions = True
        # paho logs every packet at DEBUG (kept with --log-level debug) and every failed reconnect at
        # ERROR; we report connection problems ourselves, once, so of paho's warnings and errors keep
        # only what would otherwise vanish: exceptions in callbacks.
        paho_log = logging.getLogger("digitspot.paho")
        paho_log.addFilter(lambda r: r.levelno < logging.WARNING or "Caught exception" in r.getMessage())
        client.enable_logger(paho_log)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        cfg = self.cfg
        log.info("MQTT broker %s:%d%s%s, topics under %s/", cfg.mqtt_host, cfg.mqtt_port,
                 " (TLS)" if cfg.mqtt_tls or cfg.mqtt_ca_file else "",
                 f" as {cfg.mqtt_username!r}" if cfg.mqtt_username else "", self.prefix)
        self.client.connect_async(cfg.mqtt_host, cfg.mqtt_port, keepalive=cfg.mqtt_keepalive)
        self.client.loop_start()
        self.thread.start()

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _problem(self, message: str) -> None:
        """Log a connection problem once (at error), then only when it changes: no log flood."""
        if message != self._last_problem:
            log.error("%s; retrying with backoff (up to 30 s)", message)
            self._last_problem = message
        else:
            log.debug("%s (still)", message)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            hint = ""
            if reason_code.value in (0x86, 0x87, 4, 5) or "authori" in str(reason_code).lower() or \
                    "password" in str(reason_code).lower():
                hint = " (check mqtt_username and the password file / DIGITSPOT_MQTT_PASSWORD)"
            self._problem(f"MQTT broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port} refused the connection: "
                          f"{reason_code}{hint}")
            return
        self._last_problem = None
        self._connected_at = time.monotonic()
        log.info("MQTT connected to %s:%d%s", self.cfg.mqtt_host, self.cfg.mqtt_port,
                 "" if not self._ever_connected else " again")
        self._ever_connected = True
        client.publish(self.status_topic, ONLINE if self.available else OFFLINE, qos=1, retain=True)
        client.publish(self.info_topic, self.info_json(), qos=1, retain=True)
        if self.discovery_json is not None:
            client.publish(self.discovery_topic, self.discovery_json(), qos=1, retain=True)
            client.subscribe(self.ha_status_topic, qos=1)
        self._publish_extra_discovery(client)
        with self.cond:
            self.connected = True
            self.resync = any(not info.is_published() for _, info in self.unacked)
            if self.pending or self.unacked:
                log.info("MQTT: %d digits waiting, %d being re-sent", len(self.pending), len(self.unacked))
            self.cond.notify_all()

    def _on_connect_fail(self, client, userdata) -> None:
        self._problem(f"cannot connect to MQTT broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port}"
                      f"{self._tls_hint()}")

    def _tls_hint(self) -> str:
        if not (self.cfg.mqtt_tls or self.cfg.mqtt_ca_file):
            return " (is it running? check mqtt_host and mqtt_port)"
        return (" (TLS: check mqtt_ca_file signs the broker's certificate, that mqtt_host matches "
                "its name, and the port is the TLS listener)")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.cond:
            was = self.connected
            self.connected = False
            self.cond.notify_all()
        if self.stopping:
            return
        if was and self._session_taken_over(client, time.monotonic() - self._connected_at):
            return
        if was:
            log.warning("MQTT connection lost (%s); digits are queued (up to %d) until it is back",
                        reason_code, self.cfg.queue_size)
        elif self._last_problem is None:
            self._problem(f"MQTT broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port} closed the connection "
                          f"({reason_code}){self._tls_hint() if reason_code.is_failure else ''}")
        else:  # the close that follows a refusal already logged
            log.debug("MQTT connection closed (%s)", reason_code)

    def _session_taken_over(self, client: mqtt.Client, lasted: float) -> bool:
        """Count sessions the broker ended soon after accepting them; on the takeover pattern log one line
        that says what to do, and reconnect slowly. Runs in paho's thread before its reconnect wait."""
        if lasted >= TAKEOVER_SESSION_S:
            self.short_sessions = 0
            if self.takeover_backoff:
                self.takeover_backoff = 0
                client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
            return False
        self.short_sessions += 1
        if self.short_sessions < TAKEOVER_SESSIONS:
            return False
        first = self.takeover_backoff == 0
        self.takeover_backoff = TAKEOVER_BACKOFF_S if first else min(TAKEOVER_BACKOFF_MAX_S,
                                                                      self.takeover_backoff * 2)
        client.reconnect_delay_set(min_delay=self.takeover_backoff, max_delay=self.takeover_backoff)
        message = (f"MQTT broker {self.cfg.mqtt_host}:{self.cfg.mqtt_port} ended {self.short_sessions} sessions "
                   f"in a row within {TAKEOVER_SESSION_S:.0f} s: another client is connected with client id "
                   f"{self.cfg.client_id!r} (a second sensor with device_id {self.cfg.device_id!r}?); give each "
                   f"sensor its own device_id or mqtt_client_id; reconnecting every {self.takeover_backoff} s "
                   "meanwhile")
        if first:
            log.error("%s", message)
        else:
            log.debug("%s", message)
        return True

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.cond:
            self.cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.ha_status_topic and message.payload.strip().lower() == b"online":
            log.info("Home Assistant came online: re-sending discovery")
            if self.discovery_json is not None:
                client.publish(self.discovery_topic, self.discovery_json(), qos=1, retain=True)
            self._publish_extra_discovery(client)
            client.publish(self.status_topic, ONLINE if self.available else OFFLINE, qos=1, retain=True)

    def _publish_extra_discovery(self, client: mqtt.Client) -> None:
        if self.extra_discovery is not None:
            for topic, payload in self.extra_discovery():
                client.publish(topic, payload, qos=1, retain=True)

    # -- digits --------------------------------------------------------------------------------
    def publish_digit(self, payload: str, seq: int) -> None:
        self._enqueue(Outgoing(self.digit_topic, payload, seq))

    def publish_sequence(self, payload: str, seq: int) -> None:
        """A digit string (``seq`` counts strings); queued behind the digits it is made of."""
        self._enqueue(Outgoing(self.sequence_topic, payload, seq))

    def _enqueue(self, item: Outgoing) -> None:
        with self.cond:
            if len(self.pending) >= self.cfg.queue_size:
                dropped = self.pending.popleft()
                self.dropped += 1
                what = "string" if dropped.topic == self.sequence_topic else "digit"
                log.warning("MQTT queue full (%d): dropped the oldest %s (%d dropped so far)",
                            self.cfg.queue_size, what, self.dropped)
            self.pending.append(item)
            self.cond.notify_all()

    def _prune(self) -> None:
        done = [item for item in self.unacked if item[1].is_published()]
        if done:
            self.delivered += len(done)
            self.unacked = [item for item in self.unacked if not item[1].is_published()]
        if self.resync and not self.unacked:
            self.resync = False

    def _publisher_loop(self) -> None:
        while True:
            with self.cond:
                while True:
                    self._prune()
                    if self.stopping and not self.pending:
                        return
                    if self.connected and not self.resync and self.pending and len(self.unacked) < self.max_inflight:
                        item = self.pending.popleft()
                        break
                    self.cond.wait(0.5)
            info = self.client.publish(item.topic, item.payload, qos=1, retain=False)
            with self.cond:
                self.unacked.append((item, info))

    def set_available(self, available: bool) -> None:
        """Microphone missing/back: the retained status follows, so Home Assistant shows the sensor down,
        and the retained info is sent again, since it carries the reason (``offline_reason``)."""
        self.available = available
        if self.connected:
            self.client.publish(self.info_topic, self.info_json(), qos=1, retain=True)
            self.client.publish(self.status_topic, ONLINE if available else OFFLINE, qos=1, retain=True)

    def backlog(self) -> int:
        with self.cond:
            self._prune()
            return len(self.pending) + len(self.unacked)

    # -- shutdown ------------------------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> int:
        """Deliver what is queued (bounded wait), publish ``offline``, disconnect; return how many digits
        were not delivered (still queued or unacknowledged at the end, or dropped from a full queue)."""
        # Also wait while disconnected: the broker may be back within the bounded wait.
        deadline = time.monotonic() + timeout
        while self.backlog() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = self.backlog()
        with self.cond:
            self.stopping = True
            self.pending.clear()
            self.cond.notify_all()
        if self.connected:
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, min(2.0, deadline - time.monotonic() + 1.0)))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.thread.join(2.0)
        return left + self.dropped

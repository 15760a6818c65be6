"""The daemon, wired in one place: source -> segmenter (VAD + early end) -> classifier -> event -> MQTT.

The model card's ``model_kind`` picks the path: a "window-classifier" is served as above, a "ctc-stream"
model by :class:`~digitspot.edge.stream_pipeline.StreamPipeline` (source -> fixed-window model calls ->
CTC digits and digit strings -> MQTT), which publishes each digit as it is heard and each string
(``<prefix>/sequence``) once it ends.

Runs the audio loop on the main thread; paho's network thread and our MQTT publisher thread do the
I/O. SIGTERM, SIGINT and SIGHUP (and the end of a file or stdin) end the loop, the segment in progress
is decided, queued digits are flushed (bounded wait), ``offline`` is published, and ``run`` returns 0;
SIGHUP is handled like SIGTERM because a closed terminal or a `kill -HUP` must not lose the word in
progress (there is nothing to reload: the configuration is read once). A file or stdin run whose digits
did not all reach the broker returns 69 instead, and the log says how many did not.

A microphone that is missing (at start or later) does not end the daemon: the status topic says
``offline``, the retained info says why (``offline_reason``), the source retries with backoff, and
systemd is kept from taking the wait for a hang. READY=1 and ``online`` follow once audio flows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import signal
import sys
import threading
import time
import uuid
from typing import Any

from digitspot.edge import __version__
from digitspot.edge.card import CTC_STREAM, load_card
from digitspot.edge.classifier import OnnxDigitClassifier, Prediction, default_model_path
from digitspot.edge.config import THRESHOLD_KEYS, EdgeConfig, effective_thresholds
from digitspot.edge.errors import EXIT_UNAVAILABLE
from digitspot.edge.events import DigitEvent, DiscoveryConfig, InfoMessage, ScoredDigit, utc_ms
from digitspot.edge.sd_notify import SystemdNotifier
from digitspot.edge.sequences import SequenceEvent, sequence_discovery_messages
from digitspot.edge.sources import AudioSource, FileSource, MicSource, StdinSource
from digitspot.edge.stream_model import OnnxStreamModel
from digitspot.edge.stream_pipeline import StreamPipeline, StreamSettings
from digitspot.edge.vad_segmenter import SegmenterSettings, Utterance, VadSegmenter

log = logging.getLogger("digitspot.daemon")

# While no word is in progress, gather this much audio per wake-up (see AudioSource.idle_wait). A word
# starts 20 ms of audio after its onset at the earliest and lasts >= 200 ms, so the batch is caught up
# long before its end: the end-of-speech latency is not affected.
IDLE_WAIT_S = 0.04
# While waiting for a device before READY=1, each EXTEND_TIMEOUT_USEC gives systemd's start timeout this
# much more time, sent every third of it: a daemon that stops sending (hung) still times out.
WAIT_EXTEND_S = 30.0


def setup_logging(level: str) -> None:
    """One line per event on stderr. Under systemd (JOURNAL_STREAM set) journald adds the time."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("digitspot").setLevel(level.upper())


def versions() -> dict[str, str]:
    import numpy
    import onnxruntime
    import paho.mqtt

    return {"digitspot": __version__, "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__, "paho-mqtt": paho.mqtt.__version__, "platform": platform.platform(),
            "machine": platform.machine()}


class Daemon:
    def __init__(self, cfg: EdgeConfig):
        self.cfg = cfg
        self.boot_id = uuid.uuid4().hex[:16]
        self.started_at = utc_ms()
        self.seq = 0
        self.stop_requested = threading.Event()
        self.notifier = SystemdNotifier()
        self.print_ok = cfg.print
        self.stats = {"digits": 0, "ignored": 0, "strings": 0}
        self.ready = False
        self.publisher = None
        self.source_problem: str | None = None  # why no audio flows (no microphone); None while it does
        self._last_extend = 0.0
        # Fail fast at start: the model (sha256 against its card) and a file or stdin source. A missing
        # microphone is waited for instead (see MicSource).
        # The card's model_kind picks the path (see the module docstring).
        model_path = cfg.model if cfg.model is not None else default_model_path()
        self.classifier: OnnxDigitClassifier | None = None
        self.pipeline: StreamPipeline | None = None
        self.model: OnnxDigitClassifier | OnnxStreamModel
        if load_card(model_path, verify=False).model_kind == CTC_STREAM:
            self.model = OnnxStreamModel(model_path, threads=cfg.threads)
        else:
            self.model = self.classifier = OnnxDigitClassifier(model_path, threads=cfg.threads)
        card = self.model.card
        log.info("model %s (%s, %s, sha256 %s...) at %d Hz, %d onnxruntime thread(s)", card.name,
                 self.model.model_path, card.model_kind, card.sha256[:12], card.sample_rate, cfg.threads)
        # Thresholds the configuration leaves unset are the ones the model card recommends.
        thresholds = effective_thresholds(cfg, card.thresholds)
        origin = {key: "model card" if getattr(cfg, key) is None else "configured" for key in THRESHOLD_KEYS}
        used = THRESHOLD_KEYS if self.classifier is not None else ("min_confidence",)  # no early end in a stream
        log.info("thresholds: %s", ", ".join(f"{key} {getattr(thresholds, key)} ({origin[key]})" for key in used))
        self.cfg = cfg = dataclasses.replace(cfg, **{key: getattr(thresholds, key) for key in THRESHOLD_KEYS})
        self.source = self._make_source()
        self.source_problem = getattr(self.source, "problem", None)
        if self.source_problem is None:
            log.info("listening to %s", self.source.describe())
        else:
            self.notifier.status(f"waiting for audio: {self.source_problem}")
        if self.classifier is not None:
            self._make_segmenter(self.classifier)
        if not cfg.no_mqtt:
            from digitspot.edge.mqtt_publisher import MqttPublisher

            strings = self._sequence_discovery if isinstance(self.model, OnnxStreamModel) else None
            self.publisher = MqttPublisher(cfg, self._info_json, self._discovery_json, extra_discovery=strings)
            self.publisher.set_available(self.source_problem is None)  # before start: sets the first status
        if isinstance(self.model, OnnxStreamModel):
            settings = StreamSettings.for_model(self.model, device_id=cfg.device_id, boot_id=self.boot_id,
                                                min_confidence=cfg.min_confidence, sequence_gap_ms=cfg.sequence_gap_ms,
                                                onset_db=cfg.onset_db)
            log.info("a digit string ends after %d ms without a digit (%s)", settings.sequence_gap_ms,
                     "configured" if cfg.sequence_gap_ms is not None else "model card")
            self.cfg = dataclasses.replace(cfg, sequence_gap_ms=settings.sequence_gap_ms)  # as the info shows it
            self.pipeline = StreamPipeline(self.model, settings, self.publisher)

    def _make_segmenter(self, classifier: OnnxDigitClassifier) -> None:
        cfg, card = self.cfg, classifier.card
        self.segmenter = VadSegmenter(
            SegmenterSettings(
                sample_rate=card.sample_rate, vad_mode=cfg.vad_mode, frame_ms=cfg.vad_frame_ms,
                preroll_ms=cfg.preroll_ms, hangover_ms=cfg.hangover_ms, offset_ms=cfg.offset_ms,
                early_confidence=cfg.early_confidence, min_confidence=cfg.min_confidence,
                min_segment_ms=cfg.min_segment_ms, max_segment_ms=cfg.max_segment_ms,
                onset_db=cfg.onset_db, offset_db=cfg.offset_db, min_voicing=cfg.min_voicing,
            ),
            classifier.classify,
        )

    def _make_source(self) -> AudioSource:
        cfg, rate = self.cfg, self.model.sample_rate
        if cfg.source == "file":
            assert cfg.input is not None
            return FileSource(cfg.input, rate, realtime=cfg.realtime)
        if cfg.source == "stdin":
            return StdinSource(cfg.input_rate, rate)
        return MicSource(rate, device=cfg.device, capture_rate=cfg.capture_rate,
                         on_status=self._on_source_status, on_wait=self._while_waiting)

    # -- messages ------------------------------------------------------------------------------
    def _info_json(self) -> str:
        card = self.model.card
        return InfoMessage(
            device_id=self.cfg.device_id, boot_id=self.boot_id, started_at=self.started_at, versions=versions(),
            model={"name": card.name, "sha256": card.sha256, "model_kind": card.model_kind, "sample_rate": card.sample_rate,
                   "window_samples": card.window_samples, "quantization": card.quantization.scheme,
                   "parameter_count": card.parameter_count, "metrics": card.metrics,
                   "created_at": card.created_at, "thresholds": dataclasses.asdict(card.thresholds)},
            config=self.cfg.public_dict(), source=self.source.describe(), attribution=card.attribution,
            offline_reason=self.source_problem,
        ).to_json()

    def _discovery_json(self) -> str:
        return DiscoveryConfig(
            device_id=self.cfg.device_id, device_name=self.cfg.device_name or f"digitspot {self.cfg.device_id}",
            prefix=self.cfg.prefix, sw_version=__version__, model_name=self.model.card.name,
        ).to_json()

    def _sequence_discovery(self) -> list[tuple[str, str]]:
        """Discovery for digit strings: the event entity, and a device trigger per code in trigger_codes."""
        return sequence_discovery_messages(
            device_id=self.cfg.device_id, device_name=self.cfg.device_name or f"digitspot {self.cfg.device_id}",
            prefix=self.cfg.prefix, discovery_prefix=self.cfg.discovery_prefix, sw_version=__version__,
            model_name=self.model.card.name, codes=self.cfg.trigger_codes,
        )

    def _on_source_status(self, problem: str | None) -> None:
        """The microphone went away or came back: systemd's status line and the retained status follow."""
        self.source_problem = problem
        self.notifier.status(f"waiting for audio: {problem}" if problem
                             else f"listening to {self.source.describe()}")
        if self.publisher is not None:
            self.publisher.set_available(problem is None)

    def _while_waiting(self) -> None:
        """Called while the source waits for its device: the process is alive, not hung, so systemd's
        watchdog is fed and, before READY=1, its start timeout is extended."""
        self.notifier.watchdog()
        now = time.monotonic()
        if not self.ready and now - self._last_extend >= WAIT_EXTEND_S / 3:
            self._last_extend = now
            self.notifier.notify(f"EXTEND_TIMEOUT_USEC={int(WAIT_EXTEND_S * 1e6)}")

    # -- the loop ------------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        if signum is not None:
            log.info("%s received: stopping", signal.Signals(signum).name)
        self.stop_requested.set()
        self.source.close()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # An ignored SIGHUP (started under nohup) stays ignored: that caller asked to outlive its terminal.
            if not (signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN):
                signal.signal(signum, self.request_stop)
        if self.publisher is not None:
            self.publisher.start()
        try:
            for chunk in self.source:
                if not self.ready:
                    self.notifier.ready(f"listening to {self.source.describe()}")
                    log.info("ready: audio is flowing")
                    self.ready = True
                self.notifier.watchdog()
                if self.pipeline is not None:
                    for event in self.pipeline.push(chunk.samples, chunk.received_at):
                        self._report(event)
                    self.source.idle_wait = 0.0 if self.pipeline.in_speech else IDLE_WAIT_S
                else:
                    for utterance in self.segmenter.push(chunk.samples, chunk.received_at):
                        self._handle(utterance)
                    self.source.idle_wait = 0.0 if self.segmenter.in_speech else IDLE_WAIT_S
                if self.stop_requested.is_set():
                    break
            if not self.stop_requested.is_set():
                log.info("end of input")
            if self.pipeline is not None:
                for event in self.pipeline.finish():
                    self._report(event)
            else:
                for utterance in self.segmenter.finish():
                    self._handle(utterance)
        finally:
            undelivered = self.shutdown()
        if undelivered and self.cfg.source in ("file", "stdin"):
            return EXIT_UNAVAILABLE  # a one-shot run: its caller must learn that digits were lost
        return 0

    def shutdown(self) -> int:
        """Stop the publisher (bounded flush); log what was heard and delivered; return the undelivered count."""
        self.notifier.stopping()
        self.notifier.status("stopping")
        heard, ignored = self.stats["digits"], self.stats["ignored"]
        undelivered = 0
        if self.pipeline is not None:
            undelivered = self._stop_streaming()
        elif self.publisher is None:
            log.info("stopped: %d digit(s) heard (MQTT off), %d segment(s) ignored", heard, ignored)
        else:
            undelivered = self.publisher.stop()
            log.info("stopped: %d digit(s) heard, %d delivered to the broker, %d segment(s) ignored", heard,
                     heard - undelivered, ignored)
            if undelivered:
                log.error("%d of %d digit(s) were NOT delivered: the broker %s:%d was unreachable or refused us "
                          "(see the MQTT lines above)", undelivered, heard, self.cfg.mqtt_host, self.cfg.mqtt_port)
        self.notifier.close()
        return undelivered

    def _stop_streaming(self) -> int:
        """shutdown() of the streaming path: digits and strings share the publisher's queue and its count."""
        heard, strings = self.stats["digits"], self.stats["strings"]
        assert isinstance(self.model, OnnxStreamModel)
        ran = f"the model ran {self.model.calls} of {self.model.calls + self.model.skipped_calls} steps"
        if self.publisher is None:
            log.info("stopped: %d digit(s) and %d string(s) heard (MQTT off); %s", heard, strings, ran)
            return 0
        messages = heard + strings
        undelivered = self.publisher.stop()
        log.info("stopped: %d digit(s) and %d string(s) heard, %d of %d message(s) delivered to the broker; %s",
                 heard, strings, messages - undelivered, messages, ran)
        if undelivered:
            log.error("%d of %d message(s) were NOT delivered: the broker %s:%d was unreachable or refused us "
                      "(see the MQTT lines above)", undelivered, messages, self.cfg.mqtt_host, self.cfg.mqtt_port)
        return undelivered

    def _print(self, payload: str) -> None:
        if self.print_ok:
            try:
                sys.stdout.write(payload + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                self.print_ok = False
                log.warning("stdout closed: no more --print output")

    def _report(self, event: DigitEvent | SequenceEvent) -> None:
        """An event of the streaming path, already handed to the publisher: print, count, log."""
        self._print(event.to_json())
        if isinstance(event, SequenceEvent):
            self.stats["strings"] += 1
            log.info("string %s (seq %d, %d digit(s), %.2f-%.2f s)", event.digits, event.seq, len(event.digits),
                     event.audio_start_ms / 1000, event.audio_end_ms / 1000)
            return
        self.stats["digits"] += 1
        self.notifier.status(f"{self.stats['digits']} digit(s) heard; last {event.digit} "
                             f"({event.confidence:.2f}) at {time.strftime('%H:%M:%S')}")
        log.info("digit %d (confidence %.2f, seq %d, %d ms after its end, at %.2f s)", event.digit,
                 event.confidence, event.seq, event.latency_ms, event.audio_end_ms / 1000)

    def _handle(self, utterance: Utterance) -> None:
        if not utterance.accepted or utterance.prediction is None:
            self.stats["ignored"] += 1
            log.debug("segment at %.2f s ignored: %s", utterance.start_sample / self.model.sample_rate,
                      utterance.reason)
            return
        prediction: Prediction = utterance.prediction
        self.seq += 1
        rate = self.model.sample_rate
        published_at = utc_ms()
        speech_end = utc_ms(utterance.end_time)
        card = self.model.card
        event = DigitEvent(
            device_id=self.cfg.device_id, digit=prediction.digit, confidence=prediction.confidence,
            top3=[ScoredDigit(int(label), score) for label, score in prediction.top(3)],
            speech_start=utc_ms(utterance.start_time), speech_end=speech_end, published_at=published_at,
            latency_ms=published_at - speech_end, seq=self.seq, boot_id=self.boot_id,
            model_name=card.name, model_sha256=card.sha256,
            audio_start_ms=int(utterance.start_sample * 1000 // rate),
            audio_end_ms=int(utterance.end_sample * 1000 // rate), early=utterance.early,
        )
        payload = event.to_json()
        if self.publisher is not None:
            self.publisher.publish_digit(payload, self.seq)
        self._print(payload)
        self.stats["digits"] += 1
        self.notifier.status(f"{self.stats['digits']} digit(s) heard; last {prediction.digit} "
                             f"({prediction.confidence:.2f}) at {time.strftime('%H:%M:%S')}")
        log.info("digit %d (confidence %.2f, seq %d, %s end, %d ms after end of speech, at %.2f s)",
                 prediction.digit, prediction.confidence, self.seq, "early" if utterance.early else "late",
                 event.latency_ms, utterance.end_sample / rate)


def run_daemon(cfg: EdgeConfig) -> int:
    daemon = Daemon(cfg)
    return daemon.run()


__all__ = ["Daemon", "run_daemon", "setup_logging"]

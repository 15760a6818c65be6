"""Benchmarks that check digitspot's targets on the machine they run on.

Runnable on a Pi with only the edge install: torch (TorchScript/eager latency), matplotlib (PNGs)
and pocketsphinx (the peer) are used when installed and reported as skipped when not.

    python -m digitspot.benchmarks                      # every section, full size; exit 1 on a missed gate
    python -m digitspot.benchmarks --short              # small counts, a couple of minutes (what the tests run)
    python -m digitspot.benchmarks --only inference ... # some sections: inference, accuracy, peer, e2e, throughput

Every timing uses monotonic clocks (``time.perf_counter_ns``/``CLOCK_MONOTONIC``), warms up first
and reports medians and tails, never a single number.
"""

SCHEMA_VERSION = 1

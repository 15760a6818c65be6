"""Benchmarks that prove digitspot's targets on the machine they run on (issue 4).

Runnable on a Pi with only the edge install: torch (TorchScript/eager latency), matplotlib (PNGs)
and pocketsphinx (the peer) are used when installed and reported as skipped when not.

    python -m digitspot.benchmarks all            # everything at full size; exit 1 when a gated target is missed
    python -m digitspot.benchmarks all --short    # small counts, a couple of minutes (what the tests run)
    python -m digitspot.benchmarks inference|e2e|throughput|peer|accuracy ...

Every timing uses monotonic clocks (``time.perf_counter_ns``/``CLOCK_MONOTONIC``), warms up first
and reports medians and tails, never a single number.
"""

SCHEMA_VERSION = 1

"""Tools for the demo, the tests and the benchmarks: a private Mosquitto, the demo, child processes.

Kept apart from the runtime modules of ``digitspot.edge`` on purpose: the daemon on a Pi never imports
them; they ship in the same wheel so that ``make demo`` and the benchmarks run from a plain install.
"""

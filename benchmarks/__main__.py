"""``python -m digitspot.benchmarks``: see :mod:`digitspot.benchmarks.cli`."""

from digitspot.benchmarks.cli import main

main()

"""``python -m digitspot.train`` is ``digitspot-train``."""

from digitspot.train.cli import main

main()

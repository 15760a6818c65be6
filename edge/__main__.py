"""``python -m digitspot.edge`` is ``digitspot-edge`` (handy under qemu or without console scripts)."""

from digitspot.edge.cli import main

main()

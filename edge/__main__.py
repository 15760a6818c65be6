"""``python -m edge`` is ``digitspot-edge`` (handy under qemu or without console scripts)."""

from edge.cli import main

main()

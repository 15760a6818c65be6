"""What every ``digitspot-edge`` subcommand shares: click settings and the one-line failure."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from digitspot.edge.errors import DigitspotError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}


def fail(error: DigitspotError) -> NoReturn:
    """Print one clear line and exit with the error's documented code."""
    click.echo(f"digitspot-edge: error: {error}", err=True)
    sys.exit(error.exit_code)

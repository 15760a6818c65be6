"""``digitspot-edge run`` (the daemon) and ``digitspot-edge devices`` (list microphones).

The ``run`` options are generated from the fields of :class:`digitspot.edge.config.EdgeConfig`, where
each setting's help text, flag and shown default are declared once. Every flag is also a TOML key
(underscores) and a ``DIGITSPOT_*`` environment variable; see ``digitspot.edge.config`` for the
precedence. Flags default to "not given" here so that the lower layers can fill them; ``--help``
shows the effective built-in defaults.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from digitspot.edge.cli_common import CONTEXT_SETTINGS, fail
from digitspot.edge.config import CONFIG_ENV, Setting, build_config, settings
from digitspot.edge.errors import DigitspotError


def _click_type(s: Setting):
    if s.choices:
        return click.Choice(s.choices)
    if s.kind is Path:
        return click.Path(path_type=Path)
    return s.kind


def option_for(s: Setting):
    """The click option of one setting; its value is None when not given (the lower layers decide)."""
    help_text = f"{s.help}  [default: {s.default}]"
    if s.kind is bool:
        return click.option(s.decl, s.key, default=None, show_default=False, help=help_text)
    return click.option(s.decl, s.key, type=_click_type(s), default=None, show_default=False, help=help_text,
                        metavar=s.metavar)


RUN_OPTIONS = [
    click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                 help=f"TOML file whose keys mirror these flags (mqtt_host = \"...\"); env {CONFIG_ENV}"),
    *(option_for(s) for s in settings() if s.flags),
]


def with_options(func):
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


class SecretSafeCommand(click.Command):
    """A click command whose usage errors never repeat what was typed near the password option.

    click answers an unknown option with "No such option '--mqtt-password-filehunter2'. Did you mean
    ...?", and an extra argument with "Got unexpected extra argument (hunter2)": both echo what may be a
    password (a missing space, or the password typed after its file's path) to the terminal and any log
    that captures it. ``run`` takes no arguments, so neither message needs the text itself.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            # click suggests --mqtt-password-file for what looks like it: then the text may be a password.
            meant = "--mqtt-password-file" in (exc.possibilities or ()) or exc.option_name.startswith("--mqtt-pass")
            if not meant:
                raise
            raise click.UsageError(
                "unknown option near --mqtt-password-file (not shown: it may hold a password); the password goes "
                "in a file given as --mqtt-password-file PATH, or in DIGITSPOT_MQTT_PASSWORD", ctx) from None
        except click.UsageError as exc:
            if "unexpected extra argument" not in exc.message:
                raise
            raise click.UsageError(f"{self.name} takes no arguments, only options (the extra ones are not shown: "
                                   "one may be a password)", ctx) from None


@click.command(cls=SecretSafeCommand, context_settings=CONTEXT_SETTINGS)
@with_options
def run(config_file: Path | None, **flags) -> None:
    """Listen and publish every spoken digit over MQTT (the daemon).

    \b
    Examples:
      digitspot-edge run --config /etc/digitspot/edge.toml
      digitspot-edge run --source file --input digits.wav --realtime --print --no-mqtt
      arecord -q -f S16_LE -r 16000 -c 1 -t raw | digitspot-edge run --source stdin --input-rate 16000
    """
    from digitspot.edge.daemon import run_daemon, setup_logging

    try:
        cfg = build_config(flags, config_file)
    except DigitspotError as exc:
        fail(exc)
    setup_logging(cfg.log_level)
    try:
        code = run_daemon(cfg)
    except DigitspotError as exc:
        fail(exc)
    sys.exit(code)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device")
def devices(as_json: bool) -> None:
    """List the capture devices PortAudio sees (for --device NAME|INDEX)."""
    from digitspot.edge.sources import list_input_devices

    try:
        found = list_input_devices()
    except DigitspotError as exc:
        fail(exc)
    if as_json:
        for d in found:
            click.echo(json.dumps(dataclasses.asdict(d)))
        return
    if not found:
        click.echo("no capture devices found (is a microphone plugged in? is the user in group `audio`?)")
        return
    for d in found:
        mark = "*" if d.is_default else " "
        click.echo(f"{mark}{d.index:3d}  {d.name}  ({d.channels} ch, {d.default_rate} Hz, {d.host_api})")

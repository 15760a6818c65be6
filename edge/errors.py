"""Error types and the process exit codes they map to.

Exit codes follow BSD sysexits.h so that shell scripts and systemd can tell failures apart:
the README lists them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURES = 1  # some inputs failed (e.g. one bad file among many in `classify`)
EXIT_USAGE = 2  # click's own code for bad command-line usage
EXIT_DATAERR = 65  # unusable model or audio data (sha256 mismatch, not audio, ...)
EXIT_NOINPUT = 66  # an input file or directory does not exist or is empty
EXIT_UNAVAILABLE = 69  # audio device or broker unavailable for a one-shot command
EXIT_SOFTWARE = 70  # internal error: a bug, please report
EXIT_CONFIG = 78  # configuration error (bad TOML, bad value)
EXIT_MISSING_EXTRA = 3  # a command of the training side run on an install without the `train` extra


class DigitspotError(Exception):
    """An error with a one-line message that tells the user what to do, and an exit code."""

    exit_code = EXIT_SOFTWARE

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return self.message.replace("\n", " ")


class ConfigError(DigitspotError):
    exit_code = EXIT_CONFIG


class ModelError(DigitspotError):
    """The model or its card cannot be used (missing, corrupt, sha256 mismatch, wrong schema)."""

    exit_code = EXIT_DATAERR


class AudioError(DigitspotError):
    """An audio input is not usable (not audio, truncated, empty)."""

    exit_code = EXIT_DATAERR


class MissingInputError(DigitspotError):
    exit_code = EXIT_NOINPUT


class UnavailableError(DigitspotError):
    exit_code = EXIT_UNAVAILABLE

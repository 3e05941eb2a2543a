"""Errors a user can cause. Stages print them as one line; serving maps them to 4xx."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(Exception):
    """Bad input or configuration: reported as one line, never as a traceback."""


class ParamError(UserError):
    """A value in params.yaml is missing or invalid."""


class DataError(UserError):
    """Input data is missing, malformed or inconsistent."""


class ImageError(DataError):
    """An image cannot be decoded or is unusable."""


class DownloadError(UserError):
    """A remote file cannot be fetched."""


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A user mistake or Ctrl-C ends the command with one `error: ...` line, never a traceback."""
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)

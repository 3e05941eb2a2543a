"""Errors a user can cause. Stages print them as one line; serving maps them to 4xx."""

from __future__ import annotations


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

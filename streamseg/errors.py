"""The errors streamseg raises, each with the exit code the CLI maps it to.

``InputError`` (exit 2) is a problem with what the user gave: a path, a model id,
a camera index, an output location. ``StreamsegError`` (exit 1) is anything that
failed while running. Library code raises these with the underlying exception
chained (``raise ... from exc``); only the CLI turns them into one line on stderr.
"""

from __future__ import annotations

import re


class StreamsegError(Exception):
    """A failure while running (exit code 1)."""

    exit_code = 1


class InputError(StreamsegError, ValueError):
    """Bad input from the user: a missing or unreadable source, model or output (exit code 2)."""

    exit_code = 2


class SourceError(InputError):
    """A source could not be opened or read."""


class ModelLoadError(InputError):
    """A model could not be found or is not a segmentation model."""


class OutputError(InputError):
    """An output could not be created or written."""


class WriteError(StreamsegError):
    """An output that opened fine failed while being written: disk full, file size limit... (exit code 1)."""


class Stopped(Exception):
    """Raised inside a stage when the channel it feeds has no consumer any more."""


def short_message(exc: BaseException, limit: int = 200) -> str:
    """An exception's text as one line for users: its first non-empty line (at most ``limit`` characters,
    secrets in URLs hidden), or its type's name when it says nothing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0])[:limit] if lines else type(exc).__name__


def describe(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line`` for an exception streamseg did not raise itself (``Type`` alone when it says nothing)."""
    text = short_message(exc, limit)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


_SECRET_PARAMS = ("token", "key", "secret", "pass", "passphrase", "password", "passwd", "pwd", "auth", "authorization",
                  "sig", "signature", "credential", "credentials")  # a parameter name ending in one of these
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s'\"]*):(?P<password>[^/@\s'\"]*)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&;][A-Za-z0-9_.-]*(?:" + "|".join(_SECRET_PARAMS) + r")=)"
                           r"(?P<value>[^&;#\s'\"]+)", re.IGNORECASE)
# RTMP's stream key: what follows the application in rtmp://host/app/KEY is the publishing password
_RTMP_KEY = re.compile(r"(?P<head>\brtmp[a-z]?://[^/\s'\"]+/[^/\s'\"?#]+/)(?P<key>[^\s'\"?#]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the secrets URLs carry hidden: passwords in ``scheme://user:password@host`` and the values
    of query parameters named like a token, key, secret, password or signature, and RTMP stream keys
    (``rtmp://host/app/***``). For messages, logs and pages."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _RTMP_KEY.sub(lambda m: f"{m['head']}***", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}***", text)

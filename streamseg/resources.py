"""Helpers shared by sources, sinks, exports and the pipeline: the context-manager base, closing many, short
error text, file-name-safe names, and the one rule for output folders."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path


class Closing:
    """Makes a class with an idempotent ``close()`` a context manager."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


def close_all(closeables: Iterable[object]) -> None:
    """``close()`` every one of them, even when one fails; then raise the first failure."""
    first: BaseException | None = None
    for c in closeables:
        try:
            c.close()
        except BaseException as exc:  # close the rest, then raise the first
            first = first or exc
    if first is not None:
        raise first


STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt", "rtp"})


def is_url(spec: str) -> bool:
    """Whether an input names a network stream or file (``rtsp://``, ``http(s)://``, ``tcp://``...)."""
    from urllib.parse import urlparse

    return urlparse(spec).scheme.lower() in STREAM_SCHEMES


def safe_name(text: str, default: str) -> str:
    """``text`` as a file-name-safe word: runs of other characters become ``-``; ``default`` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or default


def short_message(exc: BaseException) -> str:
    """The first line of an exception's text (at most 200 characters, secrets in URLs hidden), or its type's name."""
    return redact(str(exc).splitlines()[0])[:200] if str(exc) else type(exc).__name__


def check_parent_folder(path: Path) -> None:
    """The one rule for every output: its folder must exist and be writable; the output itself is created.

    Raises :class:`~streamseg.errors.OutputError` naming the folder and the output.
    """
    from .errors import OutputError

    folder = path.resolve().parent
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder} (for {path})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder} (for {path})")


class ImageFiles(Closing):
    """An output that saves one image file per frame: counts them, lists them in ``written``; nothing to close."""

    def __init__(self) -> None:
        self.frames_written = 0
        self._written: list[Path] = []

    def _save(self, image, target: Path) -> None:
        """Save a PIL image under a temporary name, then rename it over ``target``: a file is there whole or
        not at all. A failure is a :class:`~streamseg.errors.WriteError` naming the file."""
        from .errors import WriteError
        from .files import commit, partial_path

        partial = partial_path(target)
        try:
            image.save(partial)
            commit(partial, target)
        except (OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise WriteError(f"cannot write {target}: {short_message(exc)}") from exc
        self.frames_written += 1
        self._written.append(target)

    @property
    def written(self) -> list[Path]:
        return list(self._written)

    def close(self) -> None:
        pass


_SECRET_PARAMS = ("token", "key", "secret", "pass", "passphrase", "password", "passwd", "pwd", "auth", "authorization",
                  "sig", "signature", "credential", "credentials")  # a parameter name ending in one of these
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s'\"]*):(?P<password>[^/@\s'\"]*)@")
_QUERY_SECRET = re.compile(r"(?P<name>[?&;][A-Za-z0-9_.-]*(?:" + "|".join(_SECRET_PARAMS) + r")=)"
                           r"(?P<value>[^&;#\s'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the secrets URLs carry hidden: passwords in ``scheme://user:password@host`` and the values
    of query parameters named like a token, key, secret, password or signature. For messages, logs and pages."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}***", text)

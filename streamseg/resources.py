"""Helpers shared by sources and sinks: the context-manager base and short error text."""

from __future__ import annotations


class Closing:
    """Makes a class with an idempotent ``close()`` a context manager."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


def short_message(exc: BaseException) -> str:
    """The first line of an exception's text (at most 200 characters), or its type's name."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__

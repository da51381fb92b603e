"""The base every resource extends: a context manager from an idempotent ``close()``, and closing many at once."""

from __future__ import annotations

from collections.abc import Iterable


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

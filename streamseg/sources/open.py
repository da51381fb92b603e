"""Where frames come from: video files, network streams and cameras (still images and folders: :mod:`streamseg.sources.stills`).

Every source opens in its constructor (so a bad path or an absent camera fails in
the caller's thread, before any worker starts), yields :class:`~streamseg.frames.Frame`
objects when iterated, and is a context manager with an idempotent ``close()``.
A source is iterated by one thread: the pipeline's capture thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from streamseg.errors import SourceError
from streamseg.roles import Source

from .camera import CameraSource
from .names import IMAGE_EXTENSIONS, is_url
from .reconnect import ReconnectingSource
from .stills import ImageSource
from .video import VideoSource


def _first_then(first: Source, opener: Callable[[], Source]) -> Callable[[], Source]:
    """An opener that returns ``first`` once (already open), then opens anew."""
    pending = [first]

    def open_next() -> Source:
        return pending.pop() if pending else opener()

    return open_next


def open_source(spec: str, *, camera: int | None = None, timeout: float = 10.0, reconnect: int | None = None,
                reconnect_max_delay: float = 30.0, decode_threads: int = 0, resume: bool = False) -> Source:
    """The right source for a path, URL, ``camera:N`` or camera index. Raises :class:`SourceError`.

    Live network streams come back after a failure (``reconnect`` attempts in a row;
    ``None``: no limit) and are timed by the wall clock. ``resume``: the stream delivered frames before
    (a fleet source moved or restarted), so one that is down now is waited for with the backoff, not failed.
    """
    if camera is None and spec.startswith("camera:"):
        number = spec.split(":", 1)[1]
        if not number.isdigit():
            raise SourceError(f"invalid camera {spec!r}: expected camera:N with N a number (camera:0)")
        camera = int(number)
    if camera is not None:
        return CameraSource(camera)
    if is_url(spec):
        if spec.lower().startswith("http") and Path(urlparse(spec).path).suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSource(spec, timeout=timeout)
        again = lambda: VideoSource(spec, live=True, timeout=timeout, threads=decode_threads)  # noqa: E731
        try:
            probe = VideoSource(spec, timeout=timeout, threads=decode_threads)
        except SourceError:
            if not resume:
                raise
            return ReconnectingSource(spec, timeout=timeout, attempts=reconnect, max_delay=reconnect_max_delay,
                                      opener=again, resume=True)
        if not probe.live:  # an http(s) video file: read as a file
            return probe
        return ReconnectingSource(spec, timeout=timeout, attempts=reconnect, max_delay=reconnect_max_delay,
                                  opener=_first_then(probe, again))
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"no such file or folder: {spec}")
    if p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource(p)
    return VideoSource(spec, threads=decode_threads)

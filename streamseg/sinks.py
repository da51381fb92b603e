"""Where annotated frames go besides video files (:mod:`streamseg.video_files`): images, a window, several
sinks at once, or nowhere.

A sink is created in the caller's thread (so an unwritable output fails before
any worker starts), then written and closed by one thread: the pipeline's render
thread. Every sink is a context manager whose ``close()`` is idempotent. The
pipeline calls ``finish()`` before ``close()`` only when the source was read to
its end, so a sink can tell a complete run from a stopped one.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from .errors import OutputError
from .frames import Frame
from .resources import ImageFiles, check_parent_folder, close_all, short_message
from .roles import Sink, SinkBase
from .video_files import VIDEO_SUFFIXES, SegmentedVideoSink, VideoFileSink, segment_path  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


class ImageSink(ImageFiles, SinkBase):
    """Writes frames as images: into one file (a single still), or into a folder.

    In a folder each frame is named after its source file when it has one, else
    ``{index:06d}.png``.
    """

    def __init__(self, path: str | Path, *, folder: bool) -> None:
        self.path = Path(path)
        self.folder = folder
        if folder:
            if self.path.exists() and not self.path.is_dir():
                raise OutputError(f"output exists and is not a folder: {self.path}")
            check_parent_folder(self.path)
            try:
                self.path.mkdir(exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create output folder {self.path}: {short_message(exc)}") from exc
            if not os.access(self.path, os.W_OK | os.X_OK):
                raise OutputError(f"output folder is not writable: {self.path}")
        else:
            if self.path.suffix.lower() not in IMAGE_SUFFIXES:
                raise OutputError(f"unsupported image output {self.path}: use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
            check_parent_folder(self.path)
        super().__init__()

    def write(self, frame: Frame) -> None:
        if self.folder:
            target = self.path / (Path(frame.name).with_suffix(".png").name if frame.name else f"{frame.index:06d}.png")
        else:
            if self.frames_written:
                raise OutputError(f"{self.path} holds one image, but the input has more; write to a folder or a video")
            target = self.path
        self._save(Image.fromarray(frame.image), target)


def x_display_problem(display: str, timeout: float = 2.0) -> str | None:
    """Why no X server answers at ``display`` (``:0``, ``unix:1.0``, ``host:10.0``), or ``None`` when one does."""
    host, sep, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not sep or not number.isdigit():
        return "not an X display name (expected :N or HOST:N)"
    if host in ("", "unix") or host.startswith("/"):  # a local socket (or a launchd path on macOS)
        path = host if host.startswith("/") else f"/tmp/.X11-unix/X{number}"
        candidates = [(socket.AF_UNIX, path)] + ([(socket.AF_UNIX, "\0" + path)] if sys.platform == "linux" else [])
    else:
        candidates = [(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in candidates:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return None
        except OSError as exc:
            reason = exc.strerror or str(exc)
    return f"no X server answers ({reason})"


class WindowSink(SinkBase):
    """An OpenCV window. ``q`` or Esc (or closing the window) calls ``on_quit``.

    All calls must come from one thread; the window is destroyed in ``close()``.
    """

    def __init__(self, title: str = "streamseg", *, on_quit: Callable[[], None] | None = None) -> None:
        import cv2

        if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise OutputError("no display available for the window; use --no-display (and -o FILE) on a headless machine")
        display = os.environ.get("DISPLAY")
        if os.name == "posix" and display and (why := x_display_problem(display)):
            # OpenCV's Qt aborts the whole process (SIGABRT) on a display it cannot open: find out first.
            raise OutputError(f"cannot open a window on DISPLAY={display}: {why}; use --no-display on a headless "
                              "machine, or set DISPLAY to a running X server")
        self._cv2 = cv2
        self.title = title
        self.on_quit = on_quit
        self._opened = False
        self._closed = False
        self.frames_written = 0
        self.quit_requested = False

    def write(self, frame: Frame) -> None:
        cv2 = self._cv2
        try:
            if not self._opened:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
                cv2.resizeWindow(self.title, *frame.size)
                self._opened = True
            cv2.imshow(self.title, cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(1) & 0xFF
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error as exc:
            raise OutputError(f"cannot show the window: {short_message(exc)}") from exc
        self.frames_written += 1
        if (key in (ord("q"), 27) or visible < 1) and not self.quit_requested:
            self.quit_requested = True
            if self.on_quit is not None:
                self.on_quit()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._opened:
                try:
                    self._cv2.destroyWindow(self.title)
                    self._cv2.waitKey(1)
                except self._cv2.error:
                    pass


class NullSink(SinkBase):
    """Discards frames (a headless run that only reports)."""

    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, frame: Frame) -> None:
        self.frames_written += 1

    def close(self) -> None:
        pass


class TeeSink(SinkBase):
    """Writes every frame to several sinks; closes them all, even when one fails to close."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def write(self, frame: Frame) -> None:
        for s in self.sinks:
            s.write(frame)

    def finish(self) -> None:
        for s in self.sinks:
            s.finish()

    @property
    def written(self) -> list[Path]:
        return [path for s in self.sinks for path in getattr(s, "written", [])]

    @property
    def bytes_written(self) -> int:
        return sum(getattr(s, "bytes_written", 0) for s in self.sinks)

    @property
    def publish_reconnects(self) -> int:
        return sum(getattr(s, "publish_reconnects", 0) for s in self.sinks)

    def close(self) -> None:
        close_all(self.sinks)

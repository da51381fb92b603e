"""An OpenCV window as a sink, and the check that an X display answers before OpenCV tries to open one."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable

from streamseg.errors import OutputError, short_message
from streamseg.frames import Frame
from streamseg.roles import SinkBase


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

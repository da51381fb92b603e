"""Where frames come from: video files, network streams and cameras (still images and folders: :mod:`streamseg.stills`).

Every source opens in its constructor (so a bad path or an absent camera fails in
the caller's thread, before any worker starts), yields :class:`~streamseg.frames.Frame`
objects when iterated, and is a context manager with an idempotent ``close()``.
A source is iterated by one thread: the pipeline's capture thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import av
import numpy as np

from .errors import SourceError
from .frames import Frame
from .resources import STREAM_SCHEMES, Closing, is_url, redact, short_message  # noqa: F401  (re-exported)
from .roles import Source
from .stills import IMAGE_EXTENSIONS, STILL_FPS, ImageSource  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

VIDEO_FILE_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".flv"})


class VideoSource(Closing):
    """A video file or network stream decoded with PyAV.

    Files keep their timestamps as they are. Live streams (network URLs) start at 0
    and their frames may be dropped downstream. ``timeout`` bounds opening and each
    read of a network stream, in seconds.
    """

    def __init__(self, spec: str, *, live: bool | None = None, timeout: float = 10.0, threads: int = 0) -> None:
        self.spec = spec
        self.description = name = redact(spec)  # what messages, logs and pages show: no passwords or tokens
        self._timeout = timeout
        url = is_url(spec)
        if url:
            path_suffix = Path(urlparse(spec).path).suffix.lower()
            self.live = live if live is not None else not (spec.startswith("http") and path_suffix in VIDEO_FILE_SUFFIXES)
        else:
            self.live = bool(live)
            p = Path(spec)
            if not p.exists():
                raise SourceError(f"no such file: {spec}")
            if p.is_dir():
                raise SourceError(f"{spec} is a folder, not a video")
        options = {"rtsp_transport": "tcp"} if spec.startswith("rtsp") else {}
        try:
            self._container = av.open(spec, mode="r", options=options, timeout=(timeout, timeout) if url else None)
        except av.error.ProtocolNotFoundError as exc:
            scheme = urlparse(spec).scheme
            raise SourceError(f"cannot open stream: {name} (the FFmpeg inside PyAV has no {scheme!r} protocol; "
                              f"install PyAV built on an FFmpeg with it: pip install av --no-binary av)") from exc
        except av.FFmpegError as exc:
            what = "cannot open stream" if url else "not a readable video"
            raise SourceError(f"{what}: {name} ({short_message(exc)})") from exc
        except OSError as exc:  # e.g. permission denied
            raise SourceError(f"cannot open {name}: {short_message(exc)}") from exc
        try:
            self._stream = self._container.streams.video[0]
        except IndexError:
            self._container.close()
            raise SourceError(f"no video stream in {name}") from None
        # Frame threads each hold a frame back (about one frame interval per thread): fine for files, latency for
        # live sources, which decode with slice threads only.
        self._stream.thread_type = "SLICE" if self.live else "AUTO"
        if threads:  # 0: FFmpeg's own choice (about one per core)
            self._stream.codec_context.thread_count = threads
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = float(rate) if rate else None
        frames = self._stream.frames or 0
        if not frames and self._stream.duration and self._stream.time_base and self.fps:
            frames = int(round(float(self._stream.duration * self._stream.time_base) * self.fps))
        self.expected_frames = frames or None
        self.audio_path = spec if (not url and self._container.streams.audio) else None
        self.damaged_packets = 0  # packets the decoder could not use and skipped (as players do)
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        """Every frame, upright (a display matrix's rotation applied), with the stream's timestamps.

        A packet the decoder rejects is skipped and counted (``damaged_packets``), as players do; a
        file that cannot be read on (demuxing fails) ends with a :class:`SourceError`, as does a
        file with no frame at all.
        """
        tb = self._stream.time_base or Fraction(1, 90_000)
        step = int(round(1 / (float(tb) * self.fps))) if self.fps else 1
        first: int | None = None
        last: int | None = None
        index = 0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    self.damaged_packets += 1
                    log.debug("%s: damaged packet at %s skipped (%s)", self.description, packet.pts, short_message(exc))
                    continue
                for vf in decoded:
                    pts = vf.pts if vf.pts is not None else (last + step if last is not None else 0)
                    if self.live:
                        first = pts if first is None else first
                        pts -= first
                    last = pts
                    yield Frame(index=index, image=_upright(vf), pts=pts, time_base=tb)
                    index += 1
        except av.FFmpegError as exc:
            name = self.description
            if self.live:
                raise SourceError(f"stream failed: {name} ({short_message(exc)})") from exc
            if index == 0 and is_url(self.spec) and not _accepts_ranges(self.spec, self._timeout):
                # FFmpeg read through the whole file to find the index, and cannot go back to the first frame.
                raise SourceError(f"cannot play {name} while downloading it: its index (moov) is at the end of "
                                  "the file and the server does not support range requests (seeking); download it "
                                  "first, or remux it with ffmpeg -i IN -c copy -movflags +faststart OUT") from exc
            raise SourceError(f"corrupt video: {name} at frame {index} ({short_message(exc)})") from exc
        finally:
            if self.damaged_packets:
                log.warning("%s: skipped %d damaged packet%s", self.description, self.damaged_packets,
                            "" if self.damaged_packets == 1 else "s")
        if index == 0 and not self.live:
            raise SourceError(f"no video frames in {self.description}"
                              f"{f' ({self.damaged_packets} damaged packets)' if self.damaged_packets else ''}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def _upright(vf: av.VideoFrame) -> np.ndarray:
    """The frame as RGB, turned as its display matrix says (phones record sideways and store a rotation)."""
    image = vf.to_ndarray(format="rgb24")
    rotation = vf.rotation  # degrees counter-clockwise, as FFmpeg's own autorotation applies them
    if rotation:
        turns = round(rotation / 90)
        if abs(rotation - 90 * turns) > 1:
            _warn_once(f"rotation of {rotation} degrees is not a multiple of 90: frames left as they are")
        elif turns % 4:
            image = np.ascontiguousarray(np.rot90(image, turns % 4))
    return image


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _accepts_ranges(url: str, timeout: float) -> bool:
    """Whether an http(s) server answers a range request with a part (206); ``True`` when unsure."""
    from urllib.request import Request, urlopen

    if not url.lower().startswith("http"):
        return True
    try:
        with urlopen(Request(url, headers={"Range": "bytes=0-0", "User-Agent": "streamseg"}), timeout=timeout) as r:
            return r.status == 206
    except (OSError, ValueError):
        return True


def _first_then(first: Source, opener: Callable[[], Source]) -> Callable[[], Source]:
    """An opener that returns ``first`` once (already open), then opens anew."""
    pending = [first]

    def open_next() -> Source:
        return pending.pop() if pending else opener()

    return open_next


class CameraSource(Closing):
    """A local camera through OpenCV; timestamps are wall-clock milliseconds from the first frame.

    ``capture_factory`` builds the capture object (``cv2.VideoCapture`` by default):
    tests pass a stand-in, since no webcam exists on a build machine.
    """

    live = True
    audio_path = None
    expected_frames = None

    def __init__(self, index: int, *, capture_factory: Callable[[int], object] | None = None) -> None:
        import cv2

        factory = capture_factory or cv2.VideoCapture
        if index < 0:  # OpenCV's "any camera" (-1) crashes some backends outright
            raise SourceError(f"invalid camera {index}: expected 0 or more (the first camera is 0)")
        self.description = f"camera {index}"
        self._cap = factory(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"camera {index} not found or cannot be opened")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0)
        self.fps = fps if 1 <= fps <= 240 else 30.0
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        start = None
        index = 0
        while True:
            ok, bgr = self._cap.read()
            now = time.monotonic()
            if not ok or bgr is None:
                if index == 0:
                    raise SourceError(f"{self.description} opened but delivered no frame")
                log.warning("%s stopped delivering frames after %d", self.description, index)
                return
            start = now if start is None else start
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            yield Frame(index=index, image=rgb, pts=int((now - start) * 1000), time_base=Fraction(1, 1000))
            index += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()


class ReconnectingSource(Closing):
    """A live network stream that comes back: reopened with exponential backoff when it fails or ends.

    Timestamps follow the wall clock (milliseconds since the first frame), so a recording
    lasts as long as it ran, whatever was dropped or lost to a reconnect; within one
    connection the stream's own timestamps keep the spacing of its frames. No frame is
    invented for a gap. ``attempts``: reconnects allowed in a row (``None``: no limit;
    0: the first end is the end). Gaps are counted in ``reconnects`` and ``gap_seconds``.
    :meth:`interrupt` (any thread) ends a wait for the stream at once.
    """

    live = True
    audio_path = None
    expected_frames = None

    def __init__(self, spec: str, *, timeout: float = 10.0, attempts: int | None = None, max_delay: float = 30.0,
                 first_delay: float = 0.5, opener: Callable[[], Source] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.description = redact(spec)  # never the password or token of the URL
        self._open = opener or (lambda: VideoSource(spec, live=True, timeout=timeout))
        self._attempts, self._max_delay, self._first_delay = attempts, max_delay, first_delay
        self._clock = clock
        self._interrupted = threading.Event()
        self._current: Source | None = self._open()  # the first connection must work: a typo fails at once
        self.fps = self._current.fps
        self.reconnects = 0
        self.gap_seconds = 0.0
        self._damaged_before = 0  # damaged packets of earlier connections
        self.last_error: SourceError | None = None  # why the last connection or attempt failed
        self._closed = False

    def interrupt(self) -> None:
        self._interrupted.set()

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (false while reconnecting)."""
        return self._current is not None

    @property
    def damaged_packets(self) -> int:
        return self._damaged_before + getattr(self._current, "damaged_packets", 0)

    def _reconnect(self) -> Source | None:
        """A new connection, or ``None`` when interrupted or out of attempts (then the last error is raised)."""
        failures = 0
        delay = self._first_delay
        while not self._interrupted.is_set():
            if self._attempts is not None and failures >= self._attempts:
                return None
            log.warning("%s: reconnecting in %.1f s (attempt %d%s)", self.description, delay, failures + 1,
                        "" if self._attempts is None else f" of {self._attempts}")
            if self._interrupted.wait(delay):
                return None
            try:
                return self._open()
            except SourceError as exc:
                failures += 1
                self.last_error = exc
                log.warning("%s", exc)
                delay = min(self._max_delay, delay * 2)
        return None

    def __iter__(self) -> Iterator[Frame]:
        tb = Fraction(1, 1000)
        start: float | None = None
        last_ms = -1
        index = 0
        while self._current is not None:
            offset: float | None = None  # wall-clock second of this connection's stream time 0
            try:
                for f in self._current:
                    now = self._clock()
                    start = now if start is None else start
                    t = float(f.pts * f.time_base) if f.pts is not None and f.time_base else now - start
                    if offset is None or abs(offset + t - now) > 1.0:  # (re)align with the wall clock
                        offset = now - t
                    ms = max(last_ms + 1, round((offset + t - start) * 1000))
                    last_ms = ms
                    yield Frame(index=index, image=f.image, pts=ms, time_base=tb, captured=f.captured)
                    index += 1
                    if self._interrupted.is_set():
                        return
                log.warning("%s: the stream ended", self.description)
            except SourceError as exc:
                self.last_error = exc
                log.warning("%s", exc)
            lost_at = self._clock()
            self._damaged_before += getattr(self._current, "damaged_packets", 0)
            self._current.close()
            self._current = None
            if self._interrupted.is_set():
                return
            self._current = self._reconnect()
            if self._current is None:
                if self._interrupted.is_set() or self.last_error is None:
                    return
                if self._attempts:
                    raise SourceError(f"{self.last_error} (gave up after {self._attempts} reconnect attempts)")
                raise self.last_error
            self.reconnects += 1
            self.gap_seconds += self._clock() - lost_at
            log.warning("%s: reconnected after %.1f s (reconnect %d)", self.description, self._clock() - lost_at,
                        self.reconnects)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._interrupted.set()
            if self._current is not None:
                self._current.close()


def open_source(spec: str, *, camera: int | None = None, timeout: float = 10.0, reconnect: int | None = None,
                reconnect_max_delay: float = 30.0, decode_threads: int = 0) -> Source:
    """The right source for a path, URL, ``camera:N`` or camera index. Raises :class:`SourceError`.

    Live network streams come back after a failure (``reconnect`` attempts in a row;
    ``None``: no limit) and are timed by the wall clock.
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
        probe = VideoSource(spec, timeout=timeout, threads=decode_threads)
        if not probe.live:  # an http(s) video file: read as a file
            return probe
        again = lambda: VideoSource(spec, live=True, timeout=timeout, threads=decode_threads)  # noqa: E731
        return ReconnectingSource(spec, timeout=timeout, attempts=reconnect, max_delay=reconnect_max_delay,
                                  opener=_first_then(probe, again))
    p = Path(spec)
    if not p.exists():
        raise SourceError(f"no such file or folder: {spec}")
    if p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource(p)
    return VideoSource(spec, threads=decode_threads)

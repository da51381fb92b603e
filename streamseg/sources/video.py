"""Video files and network streams decoded with PyAV, upright and with their own timestamps."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import av
import numpy as np

from streamseg.errors import SourceError, redact, short_message
from streamseg.frames import Frame
from streamseg.roles import SourceBase

from .names import VIDEO_FILE_SUFFIXES, is_url

log = logging.getLogger(__name__)


class VideoSource(SourceBase):
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
        if self.live and self._container.streams.audio:
            _warn_once(f"{name}: the stream's audio is not recorded or published (a live stream's audio is not "
                       "carried; a file's is)")
        self.damaged_packets = 0  # packets the decoder could not use and skipped (as players do)
        self._closed = False

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(height, width) of the stream's pictures as opened (``None``: not known yet)."""
        ctx = self._stream.codec_context
        return (ctx.height, ctx.width) if ctx.height and ctx.width else None

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
        shift, spacing = 0, step  # added to a file's timestamps after each jump back; ticks between two frames
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
                    pts = vf.pts + shift if vf.pts is not None else (last + spacing if last is not None else 0)
                    if self.live:
                        first = pts if first is None else first
                        pts -= first
                    elif last is not None and pts < last:  # concatenated MPEG-TS, an encoder restart: back in time
                        self.jumps += 1
                        log.warning("%s: timestamps go back by %.3f s at frame %d; carried on after the frame before",
                                    self.description, float((last - pts) * tb), index)
                        shift += last + spacing - pts
                        pts = last + spacing
                    elif last is not None and pts > last:
                        spacing = pts - last  # the file's own spacing, for the next jump
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

"""Annotated video out to the network: RTMP, RTSP, SRT, UDP and TCP servers, or a rolling HLS playlist.

``-o rtmp://HOST/APP/KEY`` (FLV), ``-o rtsp://HOST:PORT/PATH`` (RTSP publish over TCP), ``-o srt://``,
``-o udp://`` and ``-o tcp://`` (MPEG-TS), ``-o DIR/stream.m3u8`` (HLS: ``--hls-time`` second segments,
the last ``--hls-list-size`` in the playlist, older ones deleted). H.264 from libx264 with
zero-latency settings and a keyframe every 2 s.

A :class:`Publisher` is a sink whose ``write`` never blocks: frames go into a bounded drop-oldest
channel (2 s of frames), and its own thread (``streamseg-publish``) encodes and sends them. When
the server goes away the thread closes the connection and reopens it with the sources' backoff
(0.5 s doubling up to ``reconnect_max_delay``; forever unless ``reconnect`` attempts); frames that
arrive meanwhile are dropped and counted (``dropped``). Timestamps count from the first frame and
go on across reconnects. A file source's audio goes along (AAC and MP3 copied, others re-encoded
to AAC), from where the video is after a reconnect.
When it gives up, the next ``write`` raises the error, so it reaches the caller like any sink's.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import av

from streamseg.config import DropPolicy
from streamseg.errors import OutputError, Stopped, WriteError, redact, short_message
from streamseg.frames import Frame
from streamseg.pipeline.channel import END, Channel
from streamseg.roles import SinkBase

from .audio import COPYABLE_IN_STREAMS, AudioCopy
from .video import add_h264_stream, encoder_options, rgb_frame

log = logging.getLogger(__name__)

FORMATS = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "srt": "mpegts", "udp": "mpegts", "tcp": "mpegts"}
_KEYFRAME_SECONDS = 2.0


def is_publish_target(target: str | Path) -> bool:
    """Whether ``-o`` names a network server or an HLS playlist rather than a file or folder."""
    text = str(target)
    return urlparse(text).scheme.lower() in FORMATS or text.lower().endswith(".m3u8")


class Publisher(SinkBase):
    """Sends frames to ``target`` from its own thread; see the module's text."""

    def __init__(self, target: str | Path, *, fps: float | None = None, reconnect: int | None = None,
                 reconnect_max_delay: float = 30.0, hls_time: float = 2.0, hls_list_size: int = 5,
                 audio_from: str | None = None) -> None:
        self.target = str(target)
        self.description = redact(self.target)
        scheme = urlparse(self.target).scheme.lower()
        self._hls = scheme not in FORMATS
        self.path = Path(self.target) if self._hls else None  # the playlist (a network stream leaves no file)
        if self._hls:
            folder = Path(self.target).parent
            if not folder.is_dir():
                raise OutputError(f"cannot write {self.description}: the folder {folder} does not exist")
            self._format, self._options = "hls", {"hls_time": f"{hls_time:g}", "hls_list_size": str(hls_list_size),
                                                  "hls_flags": "delete_segments+independent_segments"}
            self._keyframe_seconds = min(_KEYFRAME_SECONDS, hls_time)  # a segment starts at a keyframe
        else:
            self._format = FORMATS[scheme]
            self._keyframe_seconds = _KEYFRAME_SECONDS
            self._options = {"rtsp_transport": "tcp"} if scheme == "rtsp" else {}
        self._fps = fps or 25.0
        self._audio_from = audio_from  # a file source's audio, copied (AAC, MP3) or re-encoded to AAC
        self._origin: float | None = None  # the first frame's time: timestamps count from it, across reconnects
        self._attempts, self._max_delay = reconnect, reconnect_max_delay
        self._queue: Channel[Frame] = Channel(max(2, int(round(2 * self._fps))), DropPolicy.DROP_OLDEST,
                                              name="publish")
        self.frames_sent = 0
        self.reconnects = 0
        self.dropped_while_down = 0  # frames that arrived while no connection was open
        self.bytes_sent = 0
        self.error: WriteError | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="streamseg-publish", daemon=True)
        self._thread.start()

    # -- the render thread ----------------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        if self.error is not None:
            raise self.error
        if self._closed:
            raise OutputError(f"write to closed output {self.description}")
        try:
            self._queue.put(frame)
        except Stopped:  # the publish thread gave up between the check above and now
            raise self.error or WriteError(f"cannot publish to {self.description}") from None

    @property
    def dropped(self) -> int:
        """Frames not sent: dropped when the sender fell behind, and while disconnected."""
        return self._queue.dropped + self.dropped_while_down

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def bytes_written(self) -> int:
        return self.bytes_sent

    @property
    def publish_reconnects(self) -> int:
        return self.reconnects

    @property
    def written(self) -> list[Path]:
        """The HLS playlist once it holds segments (a network stream leaves no file)."""
        return [self.path] if self.path is not None and self.frames_sent and self.path.exists() else []

    def close(self) -> None:
        """Send what is queued (at most a few seconds), then close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        self._thread.join(timeout=10.0)
        if self._thread.is_alive():  # a server that stopped reading: give up on it
            self._stop.set()
            self._queue.cancel()
            self._thread.join(timeout=5.0)
        log.info("published %d frames to %s (%d not sent, %d reconnects)", self.frames_sent, self.description,
                 self.dropped, self.reconnects)

    # -- the publish thread ---------------------------------------------------------------------
    def _run(self) -> None:
        out: _Connection | None = None
        failures, delay, retry_at = 0, 0.5, 0.0
        try:
            while True:
                item = self._queue.get()
                if item is END:
                    break
                if out is None and time.monotonic() < retry_at:
                    self.dropped_while_down += 1
                    continue
                try:
                    if out is None:
                        out = _Connection(self, item)
                    out.send(item)
                except av.error.ProtocolNotFoundError as exc:  # e.g. srt:// with PyAV's wheels
                    scheme = urlparse(self.target).scheme
                    raise WriteError(f"cannot publish to {self.description}: the FFmpeg inside PyAV has no {scheme!r} "
                                     "protocol (pip install av --no-binary av builds PyAV on the system's FFmpeg)") from exc
                except (av.FFmpegError, OSError) as exc:
                    connected = out is not None and out.sent > 0
                    if out is not None:
                        out.close(flush=False)
                        out = None
                    self._connected.clear()
                    self.dropped_while_down += 1
                    if connected:  # it worked, then the server went away: try again soon
                        failures, delay = 0, 0.5
                        log.warning("%s: connection lost (%s)", self.description, redact(short_message(exc)))
                    else:
                        failures += 1
                        if self._attempts is not None and failures > self._attempts:
                            raise WriteError(f"cannot publish to {self.description}: {redact(short_message(exc))} "
                                             f"(gave up after {self._attempts} reconnect attempts)") from exc
                        log.warning("%s: cannot connect (%s); trying again in %.1f s", self.description,
                                    redact(short_message(exc)), delay)
                    retry_at, delay = time.monotonic() + delay, min(self._max_delay, delay * 2)
                    continue
                if out.sent == 1:
                    if self.frames_sent:
                        self.reconnects += 1
                        log.warning("%s: reconnected (reconnect %d)", self.description, self.reconnects)
                    failures, delay = 0, 0.5
                    self._connected.set()
                self.frames_sent += 1
        except WriteError as exc:
            self.error = exc
            log.error("%s", exc)
            self._queue.cancel()
        finally:
            self._connected.clear()
            if out is not None:
                out.close(flush=not self._stop.is_set())


class _Connection:
    """One open output container and its H.264 stream; timestamps from the first frame it sends."""

    def __init__(self, owner: Publisher, first: Frame) -> None:
        self.owner = owner
        self.container = av.open(owner.target, mode="w", format=owner._format, options=dict(owner._options),
                                 container_options={"flush_packets": "1"} if not owner._hls else {})
        try:
            width, height = first.size
            fps = owner._fps
            options = encoder_options("libx264", crf=23, preset="veryfast", threads=0, live=True)
            options["g"] = str(max(1, int(round(owner._keyframe_seconds * fps))))
            self.stream = add_h264_stream(self.container, "libx264", width=width, height=height, fps=fps,
                                          time_base=Fraction(1, 1000), options=options)
            self.audio: AudioCopy | None = None
            if owner._audio_from:
                try:
                    self.audio = AudioCopy(owner._audio_from, self.container, copyable=COPYABLE_IN_STREAMS)
                    self.audio.skip_until(self._seconds(first))  # a reconnect mid-file goes on from here
                except (av.FFmpegError, IndexError, ValueError) as exc:
                    log.warning("audio of %s not published: %s", owner._audio_from, short_message(exc))
        except Exception:
            self.container.close()
            raise
        self._last = -1
        self.sent = 0  # frames sent on this connection

    def _seconds(self, frame: Frame) -> float:
        """The frame's time on the published timeline (0 at the first frame ever sent)."""
        t = frame.time(self.owner._fps)
        if self.owner._origin is None:
            self.owner._origin = t
        return t - self.owner._origin

    def send(self, frame: Frame) -> None:
        seconds = self._seconds(frame)
        pts = max(self._last + 1, int(round(seconds * 1000)))
        self._last = pts
        if self.audio is not None:
            self.audio.copy_until(seconds)
        vf = rgb_frame(frame.image)
        vf.pts, vf.time_base = pts, Fraction(1, 1000)
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
            self.owner.bytes_sent += packet.size
        self.sent += 1

    def close(self, *, flush: bool) -> None:
        try:
            if flush:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
                if self.audio is not None:
                    self.audio.copy_until(self._last / 1000 + 1 / self.owner._fps)
        except (av.FFmpegError, OSError):
            pass
        finally:
            if self.audio is not None:
                try:
                    self.audio.close()
                except (av.FFmpegError, OSError):
                    pass
            try:
                self.container.close()
            except (av.FFmpegError, OSError):
                pass

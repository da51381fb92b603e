"""Annotated video out to the network: RTMP, RTSP, SRT, UDP and TCP servers, or a rolling HLS playlist.

``-o rtmp://HOST/APP/KEY`` (FLV), ``-o rtsp://HOST:PORT/PATH`` (RTSP publish over TCP), ``-o srt://``,
``-o udp://`` and ``-o tcp://`` (MPEG-TS), ``-o DIR/stream.m3u8`` (HLS: ``--hls-time`` second segments,
the last ``--hls-list-size`` in the playlist, older ones deleted). H.264 from libx264 with
zero-latency settings and a keyframe every 2 s.

A :class:`Publisher` is a sink whose ``write`` never blocks for long: frames go into a bounded channel
(2 s of frames; a live source's drops the oldest, a file's waits up to 1 s for room, then drops that
frame), and its own thread (``streamseg-publish``) hands them to a child process that encodes and
sends them (:mod:`.publish_process`). When
the server goes away the thread closes the connection and reopens it with the sources' backoff
(0.5 s doubling up to ``reconnect_max_delay``; forever unless ``reconnect`` attempts); frames that
arrive meanwhile are dropped and counted (``dropped``). Timestamps count from the first frame and
go on across reconnects. A file source's audio goes along (AAC and MP3 copied, others re-encoded
to AAC), from where the video is after a reconnect.
When it gives up, the next ``write`` raises the error, so it reaches the caller like any sink's.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from streamseg.config import DropPolicy
from streamseg.errors import OutputError, Stopped, WriteError, redact, short_message
from streamseg.frames import Frame
from streamseg.pipeline.channel import END, Channel
from streamseg.roles import SinkBase

from .publish_process import HEADER, MAGIC, PARENT_ENV

log = logging.getLogger(__name__)

FORMATS = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "srt": "mpegts", "udp": "mpegts", "tcp": "mpegts"}
_KEYFRAME_SECONDS = 2.0
CONNECT_TIMEOUT = 10.0  # seconds a new connection may take to send its first frame
STALL_TIMEOUT = 5.0  # seconds a connection may hold a frame without sending anything
CLOSING_STALL = 2.0  # the same, once the run is stopping
START_TIMEOUT = 10.0  # seconds to wait for a sending process to be ready before the first frames
CLOSE_TIMEOUT = 5.0
HLS_MIN_FREE = 256 * 1024  # bytes an HLS folder's disk must have free to take segments
HLS_FREE_AFTER_FULL = 2 * HLS_MIN_FREE  # ... and once it was full, before publishing there again
FILE_WAIT = 1.0  # seconds a file source's frame waits for room in the queue before it is dropped  # seconds to send the stream's end (encoder flushed, trailer) when the run stops
_F_SETPIPE_SZ = 1031  # Linux: a pipe's buffer size


def is_publish_target(target: str | Path) -> bool:
    """Whether ``-o`` names a network server or an HLS playlist rather than a file or folder."""
    text = str(target)
    return urlparse(text).scheme.lower() in FORMATS or text.lower().endswith(".m3u8")


class Publisher(SinkBase):
    """Sends frames to ``target`` from its own thread; see the module's text."""

    def __init__(self, target: str | Path, *, fps: float | None = None, reconnect: int | None = None,
                 reconnect_max_delay: float = 30.0, hls_time: float = 2.0, hls_list_size: int = 5,
                 audio_from: str | None = None, connect_timeout: float = CONNECT_TIMEOUT,
                 stall_timeout: float = STALL_TIMEOUT, live: bool = True) -> None:
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
        # live: the newest frames matter, the oldest are dropped; a file runs faster than real time and loses no
        # frame while the connection keeps up (write waits for room, FILE_WAIT s at most, then drops that frame)
        self._live = live
        self._queue: Channel[Frame] = Channel(max(2, int(round(2 * self._fps))),
                                              DropPolicy.DROP_OLDEST if live else DropPolicy.WAIT, name="publish")
        self.dropped_waiting = 0  # a file's frames not queued: the connection had stalled
        self.frames_sent = 0
        self.reconnects = 0
        self.dropped_while_down = 0  # frames that arrived while no connection was open
        self.bytes_sent = 0
        self.failures = 0  # connections that failed, ended or stalled (each one reconnected with the backoff)
        self.connect_timeout, self.stall_timeout = connect_timeout, stall_timeout
        self.error: WriteError | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._started = threading.Event()  # the first connection's process is ready for frames (or failed)
        self._folder_checked, self._folder_state = -1.0, None  # HLS: when its folder was checked, what was wrong
        self._thread = threading.Thread(target=self._run, name="streamseg-publish", daemon=True)
        self._thread.start()
        # a file source runs faster than real time: frames queued while the process starts (a second or so on
        # busy cores) would be dropped, the oldest first
        self._started.wait(START_TIMEOUT)

    # -- the render thread ----------------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        if self.error is not None:
            raise self.error
        if self._closed:
            raise OutputError(f"write to closed output {self.description}")
        try:
            self._queue.put(frame, timeout=None if self._live else FILE_WAIT)
        except TimeoutError:
            self.dropped_waiting += 1
        except Stopped:  # the publish thread gave up between the check above and now
            raise self.error or WriteError(f"cannot publish to {self.description}") from None

    @property
    def dropped(self) -> int:
        """Frames not sent: dropped when the sender fell behind, and while disconnected."""
        return self._queue.dropped + self.dropped_while_down + self.dropped_waiting

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
    def publish_failures(self) -> int:
        return self.failures

    @property
    def written(self) -> list[Path]:
        """The HLS playlist once it holds segments (a network stream leaves no file)."""
        return [self.path] if self.path is not None and self.frames_sent and self.path.exists() else []

    def close(self) -> None:
        """Send what is queued and the stream's end, for a few seconds at most, then close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        self._thread.join(timeout=CLOSING_STALL + CLOSE_TIMEOUT + 3.0)
        if self._thread.is_alive():  # still sending what was queued: give up on it
            self._stop.set()
            self._queue.cancel()
            self._thread.join(timeout=5.0)
        log.info("published %d frames to %s (%d not sent, %d reconnects)", self.frames_sent, self.description,
                 self.dropped, self.reconnects)

    # -- the publish thread ---------------------------------------------------------------------
    def _settings(self) -> dict:
        options = dict(self._options)
        if self._hls and self._origin is not None:  # a new connection of this run: the playlist goes on where it was
            options["hls_flags"] += "+append_list+discont_start"  # (numbering, old segments) after a discontinuity
        return {"target": self.target, "format": self._format, "options": options,
                "container_options": {} if self._hls else {"flush_packets": "1"}, "fps": self._fps,
                "keyframe_seconds": self._keyframe_seconds, "audio_from": self._audio_from}

    def _seconds(self, frame: Frame) -> float:
        """The frame's time on the published timeline (0 at the first frame ever sent)."""
        t = frame.time(self._fps)
        if self._origin is None:
            self._origin = t
        return t - self._origin

    def _run(self) -> None:
        sender: _Sender | None = None
        try:
            sender = _Sender(self)
            sender.ready.wait(START_TIMEOUT)
        except OSError:
            pass  # tried again with the first frame
        self._started.set()
        failures, delay, retry_at = 0, 0.5, 0.0
        try:
            while True:
                item = self._queue.get()
                if item is END:
                    break
                if self._hls and self._folder_problem() is not None:  # gone or full: FFmpeg's HLS muxer says nothing
                    if sender is not None:
                        sender.finish(timeout=0.0)
                        sender = None
                        self._connected.clear()
                    self.dropped_while_down += 1
                    continue
                if sender is None and (self._closed or time.monotonic() < retry_at):
                    self.dropped_while_down += 1  # no new connection to send the last frames once closed
                    continue
                try:
                    sender = sender or _Sender(self)
                    sender.send(self._seconds(item), item.image)
                    continue
                except _Lost as lost:
                    failure = lost
                except OSError as exc:  # no process could be started
                    failure = _Lost("failed", f"cannot start the sending process: {short_message(exc)}",
                                    connected=False)
                self.dropped_while_down += sender.unsent if sender is not None else 1
                sender = None
                self._connected.clear()
                self.failures += 1
                if failure.kind == "protocol":  # e.g. srt:// with PyAV's wheels
                    scheme = urlparse(self.target).scheme
                    raise WriteError(f"cannot publish to {self.description}: the FFmpeg inside PyAV has no {scheme!r} "
                                     "protocol (pip install av --no-binary av builds PyAV on the system's FFmpeg)")
                if failure.connected:  # it worked, then the server went away or stopped reading: try again soon
                    failures, delay = 0, 0.5
                    log.warning("%s: connection lost (%s)", self.description, failure.message)
                else:
                    failures += 1
                    if self._attempts is not None and failures > self._attempts:
                        raise WriteError(f"cannot publish to {self.description}: {failure.message} "
                                         f"(gave up after {self._attempts} reconnect attempts)")
                    log.warning("%s: cannot connect (%s); trying again in %.1f s", self.description,
                                failure.message, delay)
                retry_at, delay = time.monotonic() + delay, min(self._max_delay, delay * 2)
        except WriteError as exc:
            self.error = exc
            log.error("%s", exc)
            self._queue.cancel()
        finally:
            self._connected.clear()
            if sender is not None:
                problem = sender.finish(timeout=0.0 if self._stop.is_set() else CLOSE_TIMEOUT)
                if problem and self.error is None:
                    log.warning("%s: %s", self.description, problem)

    def _folder_problem(self) -> str | None:
        """For an HLS playlist: why its folder cannot take segments now (gone, or full), checked at most twice a
        second; each episode is one warning, and its end another. FFmpeg's HLS muxer drops failed segment writes
        without a word (a full disk left empty playlists and segments, a vanished folder a loop of reconnects)."""
        now = time.monotonic()
        if now - self._folder_checked < 0.5:
            return self._folder_state
        self._folder_checked = now
        folder = self.path.parent  # type: ignore[union-attr]
        try:
            free = shutil.disk_usage(folder).free if folder.is_dir() else None
        except OSError:
            free = None
        if free is None:
            problem = f"the folder {folder} is gone"
        elif free < (HLS_FREE_AFTER_FULL if self._folder_state else HLS_MIN_FREE):
            problem = f"no space left in {folder} ({free // 1024} KiB free)"
        else:
            problem = None
        if problem and not self._folder_state:
            self.failures += 1
            log.warning("%s: %s: not publishing until it can take segments again (the other outputs go on)",
                        self.description, problem)
        elif self._folder_state and not problem:
            log.warning("%s: %s can take segments again: publishing", self.description, folder)
        self._folder_state = problem
        return problem

    def _on_sent(self, sender: _Sender, count: int, size: int) -> None:
        """The reader thread of ``sender``: ``count`` more frames (``size`` more bytes) went out."""
        if sender.acked == count:  # its first frame: connected
            if self.frames_sent:
                self.reconnects += 1
                log.warning("%s: reconnected (reconnect %d)", self.description, self.reconnects)
            self._connected.set()
        self.frames_sent += count
        self.bytes_sent += size


class _Lost(Exception):
    """A sender process that failed, ended or stopped making progress (and was killed)."""

    def __init__(self, kind: str, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.kind, self.message, self.connected = kind, message, connected


class _Sender:
    """One :mod:`.publish_process` child: one connection. The publish thread writes frames to its stdin without
    ever blocking for long; a reader thread counts what the child reports sent. A child that has frames outstanding
    and sends nothing for ``stall_timeout`` seconds (``connect_timeout`` before its first frame) is killed."""

    def __init__(self, owner: Publisher) -> None:
        self.owner = owner
        self.proc = subprocess.Popen([sys.executable, "-m", "streamseg.outputs.publish_process"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True, env={**os.environ, PARENT_ENV: str(os.getpid())})
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._fd = self.proc.stdin.fileno()
        try:  # room for a 720p frame, so that a child busy with one frame is handed the next at once
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, 4 << 20)
        except OSError:
            pass
        os.set_blocking(self._fd, False)
        self.given = self.acked = self._bytes = 0
        self.error: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._busy_since: float | None = None  # frames outstanding and no progress since then
        self.ready = threading.Event()  # imported (or ended)
        self._reader = threading.Thread(target=self._read, name="streamseg-publish-reader", daemon=True)
        self._reader.start()
        self._settings: bytes | None = json.dumps(owner._settings()).encode() + b"\n"  # sent with the first frame

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            self._read_events(self.proc.stdout)
        finally:
            self.ready.set()

    def _read_events(self, lines) -> None:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if "ready" in event:
                self.ready.set()
            elif "sent" in event:
                with self._lock:
                    count, self.acked = event["sent"] - self.acked, event["sent"]
                    self._busy_since = time.monotonic() if self.acked < self.given else None
                size, self._bytes = event["bytes"] - self._bytes, event["bytes"]
                self.owner._on_sent(self, count, size)
            elif "warning" in event:
                log.warning("%s", event["warning"])
            elif "error" in event:
                self.error = (event["error"], redact(event.get("message", "")))

    def send(self, seconds: float, image: np.ndarray) -> None:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = image.shape[:2]
        with self._lock:
            self.given += 1
            if self._busy_since is None:
                self._busy_since = time.monotonic()
        limit = self.owner.stall_timeout if self.acked else self.owner.connect_timeout
        parts = [HEADER.pack(MAGIC, seconds, height, width), memoryview(image).cast("B")]
        if self._settings is not None:
            parts, self._settings = [self._settings, *parts], None
        self._write(parts, limit=limit)

    def _write(self, parts: list, *, limit: float) -> None:
        for part in parts:
            view = memoryview(part)
            while view.nbytes:
                self._check(limit)
                if not select.select([], [self._fd], [], 0.1)[1]:
                    continue
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise self._lost() from None
        self._check(limit)

    def _check(self, limit: float) -> None:
        if self.owner._closed:
            limit = min(limit, CLOSING_STALL)  # the run is stopping: a stuck server gets a moment, not more
        with self._lock:
            since = self._busy_since
        if self.owner._stop.is_set() or (since is not None and time.monotonic() - since > limit):
            what = ("the server stopped reading" if self.acked else "no answer from the server")
            self._kill()
            raise _Lost("stalled", f"{what} for {limit:g} s", connected=self.acked > 0)
        if self.proc.poll() is not None:
            raise self._lost()

    def _lost(self) -> _Lost:
        self.proc.wait()
        self._reader.join(timeout=2.0)
        kind, message = self.error or ("failed", f"the sending process ended (exit code {self.proc.returncode})")
        return _Lost(kind, message, connected=self.acked > 0)

    def _kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=2.0)

    @property
    def unsent(self) -> int:
        return self.given - self.acked

    def finish(self, *, timeout: float) -> str | None:
        """End the stream (the child flushes and writes the trailer), waiting ``timeout`` s at most; what went
        wrong, if anything. Frames given and not sent are counted as dropped."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            problem: str | None = f"the stream's end was not sent within {timeout:g} s"
        else:
            self._reader.join(timeout=2.0)
            problem = self.error[1] if self.error else None
        self.owner.dropped_while_down += self.unsent
        return problem

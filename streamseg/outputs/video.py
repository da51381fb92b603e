"""Video files out: an H.264 MP4/MOV/MKV with the source's timing and audio, or rotating segments of one.

Created in the caller's thread (an unwritable path fails before any worker starts), then
written and closed by the pipeline's render thread. ``close()`` always flushes the encoder
and finalises the file, also after an error; a file that never got a frame is removed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamseg.errors import OutputError, WriteError, short_message
from streamseg.frames import Frame
from streamseg.roles import SinkBase

from .audio import AudioCopy
from .files import SegmentClock, Syncer, check_parent_folder, check_replaceable, commit, next_segment_number, partial_path

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv"})
_FRAGMENT_SECONDS = 2.0  # live recordings: the most that a crash can lose
ENCODERS = ("libx264", "h264_nvenc")  # H.264 on the CPU, or on an NVIDIA GPU's encoder
_fell_back: set[str] = set()  # encoders already reported as unusable (one warning each per process)


@functools.lru_cache(maxsize=None)
def encoder_problem(name: str) -> str | None:
    """Why H.264 encoder ``name`` cannot open here (``None``: it can). NVENC needs FFmpeg built with it,
    an NVIDIA driver and a free encoder session; a small test context finds out once per process."""
    if name == "libx264":
        return None
    if name not in av.codecs_available:
        return f"this FFmpeg build has no {name}"
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except (av.FFmpegError, OSError, ValueError) as exc:
        return short_message(exc)
    return None


def auto_encoder(device_type: str) -> str:
    """``--encoder auto``: NVENC when the model runs on CUDA and the GPU has an encoder that opens (H100 and H200
    have none: NVDEC only), else libx264, quietly: nothing was asked for that could not be given."""
    return "h264_nvenc" if device_type == "cuda" and encoder_problem("h264_nvenc") is None else "libx264"


def usable_encoder(name: str) -> str:
    """``name`` when it opens here, else libx264, with one warning per encoder and process."""
    problem = encoder_problem(name)
    if problem is None:
        return name
    if name not in _fell_back:
        _fell_back.add(name)
        log.warning("%s cannot open (%s); encoding with libx264", name, problem)
    return "libx264"


def encoder_options(encoder: str, *, crf: int, preset: str, threads: int, live: bool) -> dict[str, str]:
    """The H.264 encoder's settings: constant quality ``crf``; ``live``: no look-ahead, no B-frames."""
    if encoder == "h264_nvenc":  # constant quality like x264's crf; live: no look-ahead, no B-frames
        options = {"preset": "p4", "rc": "vbr", "cq": str(crf), "forced-idr": "1"}
        if live:
            options |= {"tune": "ull", "zerolatency": "1", "bf": "0", "delay": "0"}
        return options
    options = {"crf": str(crf), "preset": preset}
    if threads:
        options["threads"] = str(threads)
    if live:  # each frame leaves the encoder at once (no look-ahead, no B-frames)
        options["tune"] = "zerolatency"
    return options


def add_h264_stream(out: av.container.OutputContainer, encoder: str, *, width: int, height: int, fps: float,
                    time_base: Fraction, options: dict[str, str]) -> av.VideoStream:
    """An H.264 yuv420p stream in ``out``, its size rounded up to even numbers (see :func:`rgb_frame`)."""
    stream = out.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = width + width % 2, height + height % 2
    stream.pix_fmt = "yuv420p"
    stream.time_base = stream.codec_context.time_base = time_base
    stream.codec_context.options = options
    return stream


def rgb_frame(image: np.ndarray) -> av.VideoFrame:
    """A picture for an H.264 yuv420p stream: an odd last row or column is repeated (yuv420p needs even sizes)."""
    if image.shape[0] % 2 or image.shape[1] % 2:
        image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
    return av.VideoFrame.from_ndarray(image, format="rgb24")


class VideoFileSink(SinkBase):
    """An H.264 (yuv420p) MP4/MOV/MKV file with the frames' own timestamps and the audio of ``audio_from``.

    Finite inputs (``live=False``) are written with ``+faststart`` under a temporary name
    (:func:`~streamseg.outputs.files.partial_path`) and renamed over ``path`` when closed with at least one
    frame: an existing file at ``path`` is untouched until then, and a failed or empty run leaves none.
    Live recordings are written at ``path`` itself as fragmented MP4 (a fragment every keyframe, 2 s
    apart), each fragment handed to the OS as it closes and synced at most once a second: a crash,
    a kill or a full disk leaves a file that plays up to the last fragment. ``close()`` always
    flushes the encoder and finalises the file, also after an error.
    """

    def __init__(self, path: str | Path, *, audio_from: str | None = None, fps: float | None = None,
                 crf: int = 20, preset: str = "veryfast", live: bool = False, threads: int = 0,
                 encoder: str = "libx264") -> None:
        self.path = Path(path)
        if encoder not in ENCODERS:
            raise OutputError(f"unknown encoder {encoder!r}: use one of {', '.join(ENCODERS)}")
        self.encoder = encoder  # what is asked for; what encodes is decided at the first frame
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise OutputError(f"unsupported video output {self.path}: use one of {', '.join(sorted(VIDEO_SUFFIXES))}")
        check_parent_folder(self.path)
        if self.path.is_dir():
            raise OutputError(f"output is a folder, not a file: {self.path}")
        check_replaceable(self.path)
        self._audio_from = audio_from
        self._fps = fps or 25.0
        self._crf, self._preset = crf, preset
        self._threads = threads  # x264's threads (0: its own choice, 1.5 per core)
        self._fragmented = live
        self._origin: int | None = None if live else 0  # live: the file starts at its first frame's time
        self._file = self.path if live else partial_path(self.path)  # where the bytes go until closed
        if self.path.suffix.lower() == ".mkv":
            self._container_options = {}
        elif live:
            self._container_options = {"movflags": "+frag_keyframe+empty_moov+default_base_moof"}
        else:
            self._container_options = {"movflags": "+faststart"}
        # Each packet goes to the OS at once, not into FFmpeg's I/O buffer: a live recording's finished
        # fragments reach the disk as they close, and a full disk fails the frame that hit it, not the close.
        self._container_options["flush_packets"] = "1"
        try:  # FFmpeg opens the file only at the first frame: fail here instead
            with open(self._file, "xb" if live else "wb"):
                pass
        except FileExistsError as exc:
            raise OutputError(f"cannot create {self.path}: it appeared meanwhile") from exc
        except OSError as exc:
            raise OutputError(f"cannot create {self.path}: {short_message(exc)}") from exc
        self._out: av.container.OutputContainer | None = None
        self._syncer = Syncer(self._file) if live else None
        self._stream: av.VideoStream | None = None
        self._audio: AudioCopy | None = None
        self._last_pts: int | None = None
        self._key_at: int | None = None  # live: the last forced keyframe
        self._last_seconds = 0.0
        self._complete = False
        self._closed = False
        self._kept = False
        self.frames_written = 0

    def _start(self, frame: Frame) -> None:
        try:
            self._out = av.open(str(self._file), mode="w", container_options=self._container_options)
        except (av.FFmpegError, OSError) as exc:
            raise WriteError(f"cannot create {self.path}: {short_message(exc)}") from exc
        width, height = frame.size
        tb = frame.time_base or Fraction(1, int(round(self._fps * 1000)))
        self.encoder = usable_encoder(self.encoder)
        stream = add_h264_stream(self._out, self.encoder, width=width, height=height, fps=self._fps, time_base=tb,
                                 options=encoder_options(self.encoder, crf=self._crf, preset=self._preset,
                                                         threads=self._threads, live=self._fragmented))
        stream.thread_type = "AUTO"
        self._stream = stream
        if self._audio_from:
            try:
                self._audio = AudioCopy(self._audio_from, self._out)
            except (av.FFmpegError, IndexError, ValueError) as exc:
                log.warning("audio of %s not copied: %s", self._audio_from, short_message(exc))

    def write(self, frame: Frame) -> None:
        if self._closed:
            raise OutputError(f"write to closed output {self.path}")
        if self._stream is None:
            self._start(frame)
        vf = rgb_frame(frame.image)
        tb = self._stream.codec_context.time_base
        if frame.pts is not None and frame.time_base is not None:
            pts = int(round(frame.pts * frame.time_base / tb))
            if self._origin is None:
                self._origin = pts
            pts -= self._origin
        else:
            pts = int(round(frame.index / self._fps / tb))
        if self._last_pts is not None and pts <= self._last_pts:
            log.warning("frame %d: timestamp %d not after %d; moved forward", frame.index, pts, self._last_pts)
            pts = self._last_pts + 1
        vf.pts, vf.time_base = pts, tb
        if self._fragmented and (self._key_at is None or float((pts - self._key_at) * tb) >= _FRAGMENT_SECONDS):
            vf.pict_type = av.video.frame.PictureType.I  # a keyframe, so a fragment, every 2 s of time
            self._key_at = pts
        self._last_pts = pts
        self._last_seconds = float(pts * tb)
        try:
            if self._audio is not None:
                self._audio.copy_until(self._last_seconds)
            self._out.mux(self._stream.encode(vf))
        except (av.FFmpegError, OSError) as exc:
            raise WriteError(f"cannot write {self.path}: {short_message(exc)}") from exc
        self.frames_written += 1
        if self._syncer is not None:
            self._syncer.maybe_sync()

    def finish(self) -> None:
        self._complete = True

    @property
    def written(self) -> list[Path]:
        """This file, once it holds frames: a live recording as it goes, a file when it was renamed into place."""
        return [self.path] if self.frames_written and (self._kept or (self._fragmented and not self._closed)) else []

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (the partial file until it is renamed into place)."""
        for path in (self._file, self.path):
            try:
                return path.stat().st_size
            except OSError:
                continue
        return 0

    def close(self) -> None:
        """Finalise the file. A file with frames is kept (renamed into place); one without is removed; one whose
        writing failed is removed unless it is a live recording (it plays up to its last fragment)."""
        if self._closed:
            return
        self._closed = True
        failed = True
        try:
            if self._out is not None:
                try:
                    self._out.mux(self._stream.encode(None))
                    if self._audio is not None:
                        # A complete run keeps all of its audio; a stopped one ends with its video.
                        self._audio.copy_until(float("inf") if self._complete else self._last_seconds + 1 / self._fps)
                finally:
                    if self._audio is not None:
                        self._audio.close()
                    self._out.close()
            failed = False
        except (av.FFmpegError, OSError) as exc:
            raise WriteError(f"cannot finish {self.path}: {short_message(exc)}") from exc
        finally:
            if self._syncer is not None:
                self._syncer.close()
            self._settle(failed)

    def _settle(self, failed: bool) -> None:
        """Keep or remove what was written, once the container is closed (or failed to close)."""
        if self.frames_written and self._fragmented:
            self._kept = True  # in place already: fragments up to a failure still play
            if failed:
                log.warning("kept %s: it plays up to its last complete fragment", self.path)
        elif self.frames_written and not failed:
            try:
                commit(self._file, self.path)
                self._kept = True
            except OSError as exc:
                self._file.unlink(missing_ok=True)
                raise WriteError(f"cannot finish {self.path}: {short_message(exc)}") from exc
        else:  # no frame, or a file without its index: nothing playable to keep
            self._file.unlink(missing_ok=True)


def segment_path(path: Path, number: int, start: float) -> Path:
    """The file of segment ``number`` (0-based) starting at ``start`` (a ``time.time()``).

    A name holding ``%`` is a ``strftime`` pattern of the segment's local start time
    (``rec-%Y%m%d-%H%M%S.mp4``); any other name gets a 3-digit number: ``rec.mp4`` ->
    ``rec-000.mp4``, ``rec-001.mp4``...
    """
    if "%" in path.name:
        import time as _time

        return path.with_name(_time.strftime(path.name, _time.localtime(start)))
    return path.with_name(f"{path.stem}-{number:03d}{path.suffix}")


class SegmentedVideoSink(SinkBase):
    """Rotating video files of ``segment_seconds`` each (``--segment-time``), named by :func:`segment_path`.

    A segment is finalised (closed, playable) as soon as the next one starts; each starts
    at time 0 and with a keyframe. Rotation follows the frames' timestamps, so a live
    source's segments follow the wall clock. ``files`` lists what was written. A live
    recording never replaces a file: numbering continues after the segments already in the
    folder (a restarted recorder goes on with the next number), and a repeated strftime name
    gets ``-NNN``.
    """

    def __init__(self, path: str | Path, segment_seconds: float, *, fps: float | None = None,
                 live: bool = True, clock: Callable[[], float] | None = None, threads: int = 0,
                 encoder: str = "libx264") -> None:
        import time as _time

        self.path = Path(path)
        if segment_seconds <= 0:
            raise OutputError(f"--segment-time must be positive, got {segment_seconds}")
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise OutputError(f"--segment-time writes video files; {self.path} is not one "
                              f"({', '.join(sorted(VIDEO_SUFFIXES))})")
        check_parent_folder(self.path)
        self.segment_seconds = segment_seconds
        self._fps, self._live, self._threads, self._encoder = fps, live, threads, encoder
        self._clock = clock or _time.time
        self._current: VideoFileSink | None = None
        self._segments = SegmentClock(segment_seconds)
        self._segment_start = 0.0  # input time (s) of the current segment's first frame: its time 0
        self.files: list[Path] = []
        self._first_number = next_segment_number(self.path) if live else 0
        self._closed = False

    def write(self, frame: Frame) -> None:
        if self._closed:
            raise OutputError(f"write to closed output {self.path}")
        t = frame.time(self._fps)
        if self._segments.rotates(t) and self._current is not None:
            current, self._current = self._current, None
            current.close()
            log.info("segment finished: %s", current.path)
        if self._current is None:
            path = segment_path(self.path, self._first_number + len(self.files), self._clock())
            if path in self.files or (self._live and path.exists()):  # a strftime name that repeats
                k = len(self.files)
                while (unique := path.with_name(f"{path.stem}-{k:03d}{path.suffix}")).exists() or unique in self.files:
                    k += 1
                path = unique
            self._current = VideoFileSink(path, fps=self._fps, live=self._live, threads=self._threads,
                                          encoder=self._encoder)
            self._segment_start = t
            self.files.append(path)
        tb = frame.time_base
        rebased = None if frame.pts is None or tb is None else frame.pts - round(self._segment_start / tb)
        self._current.write(dataclasses.replace(frame, pts=rebased) if rebased is not None else frame)

    @property
    def written(self) -> list[Path]:
        return [f for f in self.files if f.exists()]  # a segment of a file is there once it was closed

    @property
    def bytes_written(self) -> int:
        done = sum(f.stat().st_size for f in self.written if self._current is None or f != self._current.path)
        return done + (self._current.bytes_written if self._current is not None else 0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._current is not None:
                self._current.close()

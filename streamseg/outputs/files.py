"""How outputs reach the disk without losing anything: temporary names renamed into place, names that never
replace a recording, syncing at most once a second, and outputs that are never an input.

* Outputs of finite inputs (files, folders, images) are written under ``.NAME.partial.SUFFIX`` beside the
  target and renamed over it when closed (:func:`partial_path`, :func:`commit`), so an existing target is
  untouched until the new one is complete, and a crash leaves at most a hidden partial file.
* Recordings of live sources are written in place, so that a crash leaves the recording under its own
  name, playable up to its last fragment; an existing file is never replaced: the recording takes the
  next free name (:func:`free_path`).
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

from streamseg.errors import OutputError, short_message


def check_parent_folder(path: Path) -> None:
    """The one rule for every output: its folder must exist and be writable; the output itself is created.

    Raises :class:`~streamseg.errors.OutputError` naming the folder and the output.
    """
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder} (for {path})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder} (for {path})")



def make_output_folder(folder: Path, *, create: bool = True) -> None:
    """The one rule for a folder that is itself an output (``-o DIR``, ``--masks DIR``, a batch's or fleet's
    ``OUTDIR``): an existing folder is used; a missing one is created, in a parent that must exist and be
    writable (:func:`check_parent_folder`). ``create=False`` only checks (when planning, before anything opens).

    Raises :class:`~streamseg.errors.OutputError` naming the folder.
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output exists and is not a folder: {folder}")
    if not folder.exists():
        check_parent_folder(folder)
    if not create:
        return
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {short_message(exc)}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder}")

def partial_path(target: Path) -> Path:
    """Where ``target`` is written until it is complete: ``.NAME.partial.SUFFIX`` in the same folder."""
    return target.with_name(f".{target.stem}.partial{target.suffix}")


def commit(partial: Path, target: Path) -> None:
    """Rename ``partial`` over ``target`` (atomic on one file system) and make the rename durable."""
    os.replace(partial, target)
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def special_file(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder, links followed: a device
    (``/dev/null``), a FIFO, a socket, or a link to one (``/proc/self/fd/1``). Such an output is written in
    place or refused; it is never renamed over or removed."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def free_path(path: Path) -> Path:
    """``path`` if nothing is there (or it is a special file, written in place), else the first free
    ``NAME-1.SUFFIX``, ``NAME-2.SUFFIX``..."""
    if not path.exists() or special_file(path):
        return path
    k = 1
    while (candidate := path.with_name(f"{path.stem}-{k}{path.suffix}")).exists():
        k += 1
    return candidate


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file or folder (links followed; hard links of existing files too)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_replaceable(target: Path) -> None:
    """An existing output that is read-only is protected: refuse to replace it (even as root, who could)."""
    try:
        mode = target.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise OutputError(f"output exists and is read-only: {target} (make it writable or choose another name)")


def segment_names(path: Path) -> re.Pattern:
    """The file names ``--segment-time`` gives the segments of ``path``: ``rec-000.mp4``, ``rec-001.mp4``...,
    or for a strftime pattern (``rec-%Y%m%d-%H%M%S.mp4``) any time, with or without a ``-NNN`` to make it unique."""
    stem, suffix = re.escape(path.stem), re.escape(path.suffix)
    if "%" in path.name:
        return re.compile(f"^{re.sub('%.', '.+?', stem)}(-\\d{{3,}})?{suffix}$")
    return re.compile(f"^{stem}-\\d{{3,}}{suffix}$")


SEGMENT_COMPANIONS = (".jsonl",)  # files numbered with a video's segments (a fleet's JSON Lines per segment)


def next_segment_number(path: Path) -> int:
    """One past the highest segment number of ``path`` (``rec.mp4``: ``rec-007.mp4``) already in its folder,
    counting its companions (``rec-007.jsonl``) too; 0 when there is none, and for a strftime pattern."""
    if "%" in path.name or not path.parent.is_dir():
        return 0
    patterns = [segment_names(path), *(segment_names(path.with_suffix(s)) for s in SEGMENT_COMPANIONS)]
    numbers = [int(p.stem.rsplit("-", 1)[1]) for p in path.parent.iterdir() if any(r.match(p.name) for r in patterns)]
    return max(numbers, default=-1) + 1


class SegmentClock:
    """``--segment-time``'s rule: segment k holds the frames at input times ``[k, k + 1) * seconds`` after the first.

    :class:`~streamseg.outputs.video.SegmentedVideoSink` and :class:`~streamseg.outputs.exports.SegmentedJsonExport` both
    rotate by it, so a fleet's ``rec-007.mp4`` and ``rec-007.jsonl`` hold the same frames.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._origin: float | None = None  # input time (s) of the first frame
        self._number = -1

    def rotates(self, t: float) -> bool:
        """Whether the frame at input time ``t`` (seconds) is in another segment than the frame before it."""
        self._origin = t if self._origin is None else self._origin
        number = int((t - self._origin) // self.seconds)
        changed, self._number = number != self._number, number
        return changed


class Syncer:
    """``fsync`` a file at most once per ``interval`` seconds, so that what was written survives a power cut
    without a sync per frame. Opens its own read-only descriptor (Linux syncs the file through any)."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path, self.interval = path, interval
        self._fd: int | None = None
        self._last = 0.0

    def maybe_sync(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self.sync()

    def sync(self) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            os.fsync(self._fd)
        except OSError:  # a sync that fails changes nothing that a write has not already reported
            pass

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

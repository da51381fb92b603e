"""Machine-readable outputs written as the run goes: JSON Lines records and PNG label maps.

An export is created in the caller's thread (a bad path fails before any worker
starts), then written and closed by the pipeline's render thread, one result at a
time, so a long run stopped midway keeps every record up to the stop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from streamseg.closing import Closing
from streamseg.errors import OutputError, WriteError, short_message
from streamseg.frames import SegmentationResult

from .files import (
    SegmentClock,
    Syncer,
    check_parent_folder,
    check_replaceable,
    commit,
    make_output_folder,
    next_segment_number,
    partial_path,
    special_file,
)
from .images import ImageFiles

VOID_8BIT = 255  # "no segment" in an 8-bit mask PNG
VOID_16BIT = 65535  # ... and in a 16-bit one


def rle_encode(mask: np.ndarray) -> dict:
    """COCO's compressed run-length encoding of a boolean ``(H, W)`` mask: ``{"size": [H, W], "counts": str}``.

    The same string ``pycocotools.mask.encode`` gives (column-major runs, starting with background).
    """
    h, w = mask.shape
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)  # counts start with a run of zeros
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return {"size": [int(h), int(w)], "counts": "".join(out)}


class JsonLinesExport(Closing):
    """One JSON object per frame: ``frame``, ``pts`` (seconds or null), ``task`` and ``segments``
    (``id``, ``label_id``, ``label``, ``score``, ``area``, ``bbox`` [x, y, w, h], ``track_id`` for
    instance/panoptic segments, and ``rle`` when ``masks`` is true). Each line is flushed as it is written.

    For a finite input the file is written under a temporary name and renamed into place when
    closed (with every record up to a stop or an error); for a live source (``live``) it is
    written in place, synced at most once a second, so that a crash keeps every line written.
    A live source's ``pts`` count from the first record, as the recording's MP4 does from the same frame
    (frames before it may have been dropped by the live policy): a record's ``pts`` is its frame's time in
    the video.
    """

    def __init__(self, path: str | Path, *, masks: bool = False, live: bool = False) -> None:
        self.path = Path(path)
        self.masks = masks
        self._in_place = special = special_file(self.path)  # /dev/null, a FIFO, stdout: written into, never replaced
        if not special:
            check_parent_folder(self.path)
            check_replaceable(self.path)
        self._file_path = self.path if live or special else partial_path(self.path)
        try:
            mode = "w" if special or not live else "x"
            self._file = open(self._file_path, mode, encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise OutputError(f"cannot create {self.path}: {short_message(exc)}") from exc
        self._syncer = Syncer(self._file_path) if live and not special else None
        self._live = live or special
        self._origin: float | None = None if live else 0.0  # pts of the first record (a live source's time 0)
        self._kept = False
        self.records = 0

    def write(self, result: SegmentationResult) -> None:
        ids = result.segment_map if result.segment_map is not None else result.label_map
        segments = []
        for seg in result.segments():
            item = {"id": seg.id, "label_id": seg.label_id, "label": seg.label, "score": seg.score,
                    "area": seg.area, "bbox": list(seg.bbox)}
            if seg.track_id is not None:
                item["track_id"] = seg.track_id
            if self.masks:
                item["rle"] = rle_encode(ids == seg.id)
            segments.append(item)
        pts = result.frame.seconds
        if pts is not None:
            self._origin = pts if self._origin is None else self._origin
            pts = round(pts - self._origin, 6)
        record = {"frame": result.frame.index, "pts": pts, "task": result.task, "segments": segments}
        if result.frame.name:
            record["file"] = result.frame.name
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            raise WriteError(f"cannot write {self.path}: {short_message(exc)}") from exc
        self.records += 1
        if self._syncer is not None:
            self._syncer.maybe_sync()

    @property
    def written(self) -> list[Path]:
        return [self.path] if self.records and (self._kept or self._live) else []

    def close(self) -> None:
        """Close the file; keep it when it holds records (renamed into place), else remove it."""
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            if not self._in_place:
                self._file_path.unlink(missing_ok=True)
            raise WriteError(f"cannot finish {self.path}: {short_message(exc)}") from exc
        finally:
            if self._syncer is not None:
                self._syncer.close()
        if not self.records and not self._in_place:
            self._file_path.unlink(missing_ok=True)
        elif not self._live:
            try:
                commit(self._file_path, self.path)
            except OSError as exc:
                raise WriteError(f"cannot finish {self.path}: {short_message(exc)}") from exc
        self._kept = bool(self.records)


class SegmentedJsonExport(Closing):
    """``--json`` beside ``--segment-time`` in a fleet: one JSON Lines file per video segment, named and rotated
    like it (``rec-007.mp4`` and ``rec-007.jsonl`` hold the same frames), written in place.

    ``path`` is the JSON name of the recording (``OUTDIR/NAME/rec.jsonl``). Numbering starts where
    :class:`~streamseg.outputs.video.SegmentedVideoSink` starts (one past the highest segment in the folder,
    videos and JSON alike) when both are opened together, and rotation follows the same frame times.
    """

    def __init__(self, path: str | Path, segment_seconds: float, *, fps: float | None = None,
                 masks: bool = False, live: bool = True) -> None:
        self.path = Path(path)
        if "%" in self.path.name:
            raise OutputError(f"JSON Lines per segment need a numbered name, not a pattern: {self.path}")
        check_parent_folder(self.path)
        self._fps, self._masks, self._live = fps, masks, live
        self._first_number = next_segment_number(self.path)
        self._current: JsonLinesExport | None = None
        self._segments = SegmentClock(segment_seconds)
        self._done: list[Path] = []  # closed files that hold records
        self.files: list[Path] = []
        self.records = 0

    def write(self, result: SegmentationResult) -> None:
        if self._segments.rotates(result.frame.time(self._fps)) and self._current is not None:
            self._finish_current()
        if self._current is None:
            path = self.path.with_name(f"{self.path.stem}-{self._first_number + len(self.files):03d}{self.path.suffix}")
            self._current = JsonLinesExport(path, masks=self._masks, live=self._live)
            self.files.append(path)
        self._current.write(result)
        self.records += 1

    def _finish_current(self) -> None:
        current, self._current = self._current, None
        current.close()
        self._done += current.written

    @property
    def written(self) -> list[Path]:
        return self._done + (self._current.written if self._current is not None else [])

    def close(self) -> None:
        if self._current is not None:
            self._finish_current()


class MaskPngExport(ImageFiles):
    """One PNG per frame, ``{index:06d}.png``, holding the class id (semantic) or segment id
    (instance/panoptic; its track id with ``by_track``) of every pixel.

    8-bit indexed PNGs carry the class colours as their palette; ids over 254 use 16-bit
    greyscale PNGs. Pixels with no segment hold 255 (8-bit) or 65535 (16-bit).
    """

    def __init__(self, folder: str | Path, colours: np.ndarray, *, by_track: bool = False) -> None:
        self.folder = self.path = Path(folder)  # path: what the run reports it wrote into
        self.by_track = by_track  # instance/panoptic: each pixel's track id instead of its segment id
        make_output_folder(self.folder)
        self.colours = colours
        super().__init__()

    def write(self, result: SegmentationResult) -> None:
        if result.segment_map is not None and self.by_track and result.track_ids:
            to_track = np.full(int(result.segment_map.max(initial=0)) + 2, -1, np.int64)
            for (seg_id, _, _), track in zip(result.segment_info, result.track_ids):
                to_track[seg_id] = track
            ids = np.where(result.segment_map >= 0, to_track[np.clip(result.segment_map, 0, None)], -1)
            lut = {track: label_id for (_, label_id, _), track in zip(result.segment_info, result.track_ids)}
        elif result.segment_map is not None:
            ids = result.segment_map
            lut = {seg_id: label_id for seg_id, label_id, _ in result.segment_info}
        else:
            ids, lut = result.label_map, None
        ids = ids.astype(np.int64, copy=False)
        top = int(ids.max(initial=0))
        target = self.folder / f"{result.frame.index:06d}.png"
        if top < VOID_8BIT:
            img = Image.fromarray(np.where(ids < 0, VOID_8BIT, ids).astype(np.uint8), mode="P")
            pal = np.zeros((256, 3), np.uint8)
            n = min(len(self.colours), VOID_8BIT)
            if lut is None:
                pal[:n] = self.colours[:n]
            else:
                for seg_id, label_id in lut.items():
                    if 0 <= seg_id < VOID_8BIT and 0 <= label_id < len(self.colours):
                        pal[seg_id] = self.colours[label_id]
            img.putpalette(pal.ravel().tolist())
        else:
            img = Image.fromarray(np.where(ids < 0, VOID_16BIT, ids).astype(np.uint16))
        self._save(img, target)


def read_mask_png(path: str | Path) -> np.ndarray:
    """The ids a :class:`MaskPngExport` wrote, with -1 where there was no segment."""
    with Image.open(path) as im:
        ids = np.asarray(im).astype(np.int64)
    void = VOID_8BIT if ids.max(initial=0) <= VOID_8BIT and im.mode == "P" else VOID_16BIT
    return np.where(ids == void, -1, ids)

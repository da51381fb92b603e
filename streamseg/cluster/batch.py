"""``streamseg batch INPUTS -o OUTDIR``: annotate many videos on Ray, resumably.

The driver expands INPUTS (folders, globs, text files of paths/URLs), skips inputs whose
output is already complete (checked: the file opens and holds the frame count the manifest
recorded), and hands the rest to Ray Data as small metadata rows: ``map_batches`` with a
callable class on an ``ActorPoolStrategy``, ``batch_size=1``. Each actor loads the model
once and runs the normal streamseg file pipeline (decode, batched inference, render,
encode) inside itself; frames never travel through Ray. Outputs are written under a
temporary name and renamed when closed, so a half-written file is never taken for a
finished one. Every result is appended to ``OUTDIR/manifest.jsonl`` as it comes in.

Ray is an optional extra: ``pip install 'streamseg[ray]'``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from streamseg.config import InputConfig, MasksBy, ModelConfig, OutputConfig, RenderConfig, RunConfig, choice
from streamseg.errors import InputError, StreamsegError, describe, short_message
from streamseg.outputs.files import make_output_folder
from streamseg.sources.names import safe_name

from .ray_setup import check_workers, import_ray, init_ray

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
_LIST_SUFFIXES = frozenset({".txt", ".list", ".lst"})


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """One ``streamseg batch`` job. ``model`` and ``render`` are the main command's; each actor gets them as is."""

    inputs: tuple[str, ...]
    outdir: Path
    model: ModelConfig = ModelConfig()
    render: RenderConfig = RenderConfig()
    batch_size: int = 4
    ray_address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    json_export: bool = False
    json_masks: bool = False
    masks_export: bool = False
    masks_by: MasksBy = MasksBy.SEGMENT

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks_by", choice(MasksBy, self.masks_by, "--masks-by"))
        check_workers(self.workers, self.gpus_per_worker, self.cpus_per_worker)
        if self.batch_size < 1:
            raise InputError(f"invalid batch size {self.batch_size}: expected 1 or more")
        if self.json_masks and not self.json_export:
            raise InputError("--json-masks needs --json")


# -- inputs and names ------------------------------------------------------------------------
def expand_inputs(items: Sequence[str]) -> list[str]:
    """Paths and URLs from folders (their video files, sorted), globs, text files (one per line; ``#`` comments)
    and plain paths or URLs; duplicates removed, order kept."""
    from streamseg.sources.names import VIDEO_FILE_SUFFIXES, is_url

    found: list[str] = []
    for item in items:
        p = Path(item)
        if is_url(item):
            found.append(item)
        elif p.is_dir():
            found += [str(q) for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in VIDEO_FILE_SUFFIXES]
        elif p.is_file() and p.suffix.lower() in _LIST_SUFFIXES:
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    found.append(line if is_url(line) or Path(line).is_absolute() else str(p.parent / line))
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputError(f"no file matches {item}")
            found += [m for m in matches if Path(m).is_file()]
        else:
            found.append(item)  # a missing file is recorded as failed, not fatal for the batch
    return list(dict.fromkeys(found))



def output_name(spec: str) -> str:
    """``NAME-HASH``: the input's readable stem and 8 hex digits of its full path, so two inputs never collide."""
    from urllib.parse import urlparse

    from streamseg.sources.names import is_url

    full = spec if is_url(spec) else str(Path(spec).resolve())
    stem = Path(urlparse(spec).path).stem if is_url(spec) else Path(spec).stem
    stem = safe_name(stem, "video")[:60]
    return f"{stem}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"


def count_frames(path: Path) -> int | None:
    """Video frames in a finished output (packets, no decoding), or ``None`` when it does not open."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            return sum(1 for packet in c.demux(stream) if packet.size)
    except (av.FFmpegError, IndexError, OSError):
        return None


def read_manifest(path: Path) -> dict[str, dict]:
    """The last row per input of an existing manifest (a torn last line is ignored)."""
    rows: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row.get("input", "")] = row
    return rows


def is_complete(row: dict | None, outdir: Path) -> bool:
    """A finished input: recorded as done, and its output opens with the recorded frame count."""
    if not row or row.get("status") != "done" or not row.get("output"):
        return False
    frames = count_frames(outdir / row["output"])
    return frames is not None and frames == row.get("frames")


# -- the work inside one actor -----------------------------------------------------------------
class Annotator:
    """A Ray Data callable class: loads the model once per actor; each call annotates one input file."""

    def __init__(self, config: BatchConfig, threads: int | None = None) -> None:
        import torch

        import streamseg  # noqa: F401  (OpenCV before PyAV)
        from streamseg.models.segmenter import Segmenter

        if threads:
            torch.set_num_threads(threads)
        self.threads = threads  # the forward's share: the actor's CPUs, not the machine's
        self.config = config
        self.segmenter = Segmenter.load(config.model)
        self.outdir = config.outdir
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        rows = [self.annotate(str(spec), str(name)) for spec, name in zip(batch["input"], batch["name"])]
        return {key: [row[key] for row in rows] for key in rows[0]}

    def annotate(self, spec: str, name: str) -> dict:
        """Run the file pipeline on one input; never raises: a failure is a row with a one-line reason."""
        t0 = time.monotonic()
        final = self.outdir / f"{name}.mp4"
        tmp = self.outdir / f".{name}.partial.mp4"
        json_part = self.outdir / f".{name}.partial.jsonl" if self.config.json_export else None
        masks_part = self.outdir / f".{name}.partial.masks" if self.config.masks_export else None
        extras = [(part, self.outdir / f"{name}{suffix}")  # (partial, final) of the exports
                  for part, suffix in ((json_part, ".jsonl"), (masks_part, ".masks")) if part is not None]
        row = {"input": spec, "status": "failed", "reason": "", "frames": 0, "duration": 0.0, "fps": 0.0,
               "worker": self.worker, "output": "", "seconds": 0.0}
        try:
            frames, duration = self._run(spec, tmp, json_part, masks_part)
            for part, done in extras:
                os.replace(part, done)
            os.replace(tmp, final)  # only a closed, complete file gets the real name
            row.update(status="done", frames=frames, duration=duration, output=final.name)
        except BaseException as exc:  # noqa: BLE001 - one bad input never stops the batch
            row["reason"] = failure_reason(exc)
            for path in (tmp, *(p for p, _ in extras)):
                _remove(path)
        row["seconds"] = time.monotonic() - t0
        row["fps"] = row["frames"] / row["seconds"] if row["seconds"] else 0.0
        return row

    def _run(self, spec: str, tmp: Path, json_part: Path | None, masks_part: Path | None) -> tuple[int, float]:
        from streamseg.app import Run
        from streamseg.sources.stills import ImageSource

        config = RunConfig(sources=(spec,), model=self.config.model, render=self.config.render,
                           outputs=OutputConfig(output=tmp, json_path=json_part, json_masks=self.config.json_masks,
                                                masks_dir=masks_part, masks_by=self.config.masks_by),
                           input=InputConfig(reconnect=0), batch_size=self.config.batch_size, threads=self.threads)
        with Run(config, segmenter=self.segmenter) as run:
            run.open()
            (source,) = run.sources
            if isinstance(source, ImageSource) or source.live:
                raise InputError(f"{spec} is not a video file")
            report = run.run()
        stats = report.total
        if not stats.completed or stats.frames_written == 0:
            raise StreamsegError(f"{spec}: no frames written")
        duration = stats.frames_written / source.fps if source.fps else 0.0
        return stats.frames_written, duration


def failure_reason(exc: BaseException) -> str:
    """Why an input or a source failed, in one line for a manifest or a fleet's status: streamseg's own message,
    or the exception's type and first line; passwords and tokens in URLs hidden."""
    return short_message(exc, 300) if isinstance(exc, StreamsegError) else describe(exc, 300)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- the driver -------------------------------------------------------------------------------
def run_batch(config: BatchConfig, *, progress: bool = True) -> dict:
    """Annotate ``config.inputs`` into ``config.outdir`` on Ray; returns counts. Raises InputError for unusable
    arguments."""
    ray = import_ray("streamseg batch")
    inputs, outdir = config.inputs, config.outdir
    specs = expand_inputs(inputs)
    if not specs:
        raise InputError("no inputs: give video files, folders, globs or a text file of paths/URLs")
    make_output_folder(outdir)
    manifest_path = outdir / MANIFEST
    previous = read_manifest(manifest_path)

    names = {spec: output_name(spec) for spec in specs}
    todo, skipped = [], []
    for spec in specs:
        (skipped if is_complete(previous.get(spec), outdir) else todo).append(spec)
    counts = {"done": 0, "failed": 0, "skipped": len(skipped), "frames": 0, "inputs": len(specs)}
    with open(manifest_path, "a") as manifest:
        def record(row: dict) -> None:
            row = {**row, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            manifest.write(json.dumps(row) + "\n")
            manifest.flush()
            os.fsync(manifest.fileno())

        for spec in skipped:
            old = previous[spec]
            record({"input": spec, "status": "skipped", "reason": "already complete", "frames": old["frames"],
                    "duration": old.get("duration", 0.0), "fps": 0.0, "worker": "", "output": old["output"],
                    "seconds": 0.0})
        if not todo:
            return counts

        started = time.monotonic()
        workers, gpus, cpus = config.workers, config.gpus_per_worker, config.cpus_per_worker
        init_ray(ray, config.ray_address, gpus, workers, cpus)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False  # a result is recorded as soon as it is done
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"input": spec, "name": names[spec]} for spec in todo],
                                 override_num_blocks=len(todo))
        # Frozen configs travel to the actors as they are: every model and render flag reaches them.
        actor_config = dataclasses.replace(
            config, outdir=outdir.resolve(), render=dataclasses.replace(config.render, show_fps=False),
            model=config.model if gpus else dataclasses.replace(config.model, device="cpu"))
        results = ds.map_batches(
            Annotator, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
            num_gpus=gpus or None, num_cpus=cpus,
            fn_constructor_kwargs={"config": actor_config, "threads": max(1, int(cpus))})
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="video", desc="streamseg batch", file=sys.stderr, dynamic_ncols=True)
        try:
            for row in results.iter_rows():
                row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                record(row)
                counts[row["status"]] += 1
                counts["frames"] += int(row["frames"])
                if row["status"] == "failed":
                    log.warning("failed: %s: %s", row["input"], row["reason"])
                if bar is not None:
                    elapsed = time.monotonic() - started
                    bar.set_postfix_str(f"done {counts['done']}, failed {counts['failed']}, "
                                        f"{counts['frames'] / elapsed:.1f} frames/s")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return counts

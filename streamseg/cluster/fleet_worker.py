"""One worker of ``streamseg fleet``: a Ray actor that loads the model once and records the sources it is given.

The driver tells a worker which sources to run (:meth:`FleetWorker.assign`, name -> spec) and
asks it how they go (:meth:`FleetWorker.status`) about once a second. The worker's own
manager thread makes what runs match what was asked: it stops the current :class:`~streamseg.app.Run`
(each source's files closed, playable) and starts one with the new set, all of them batched
into one forward, as ``streamseg SRC1 SRC2 ...`` does. Files go to ``OUTDIR/NAME/``
(:func:`~streamseg.cluster.fleet_plan.source_plan`); numbering continues after what is there, so a
restarted or moved source goes on with the next segment.

Frames leave the worker only when a viewer of the driver's dashboard asks (:meth:`FleetWorker.frame`:
the newest drawn frame of one source, scaled down, as a JPEG). A worker that hears nothing from
its driver for ``orphan_timeout`` seconds stops its sources (their files closed) and ends its
process: no orphan keeps a camera, a file or device memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from streamseg.errors import InputError, OutputError
from streamseg.frames import Frame
from streamseg.pipeline.stats import Snapshot, SourceFigures
from streamseg.roles import SinkBase

from .batch import failure_reason
from .fleet_plan import RECORDING, FleetConfig, source_plan

log = logging.getLogger(__name__)

STOP_WAIT = 20.0  # seconds a run gets to finish its frames in flight and close its files before it is aborted


class LatestFrames(SinkBase):
    """A sink every route writes to: keeps a reference to each route's newest drawn frame (no copy, no encoding);
    :meth:`jpeg` encodes one, scaled down, only when asked."""

    def __init__(self) -> None:
        self._images: dict[int, object] = {}

    def write(self, frame: Frame) -> None:
        self._images[frame.source] = frame.image  # one dict store: atomic under the GIL

    def jpeg(self, route: int, width: int, quality: int = 75) -> bytes | None:
        import cv2

        image = self._images.get(route)
        if image is None:
            return None
        h, w = image.shape[:2]
        if w > width:
            image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        return buf.tobytes() if ok else None

    def close(self) -> None:
        pass  # references only: nothing to release




class FleetWorker:
    """The actor's body (made a Ray actor by the driver: ``ray.remote(FleetWorker).options(...)``).

    Never raises from its methods: a model that cannot be loaded is reported by :meth:`status`
    (``load_error``), a source that fails is reported there (``failed``) and the others go on.
    """

    def __init__(self, config: FleetConfig, name: str, *, exit_when_orphaned: bool = True) -> None:
        import streamseg  # noqa: F401  (OpenCV before PyAV)

        self.config, self.name = config, name
        self.pid = os.getpid()
        self.incarnation = f"{socket.gethostname()}:{self.pid}:{time.time():.3f}"
        self.segmenter = None
        self.load_error: str | None = None
        try:
            import torch

            from streamseg.models.segmenter import Segmenter

            torch.set_num_threads(config.threads)  # the forward's share: the actor's CPUs, not the machine's
            self.segmenter = Segmenter.load(config.model)
        except BaseException as exc:  # noqa: BLE001 - reported to the driver, which says it in one line
            self.load_error = failure_reason(exc)
        self._lock = threading.Lock()
        self._want: dict[str, str] = {}  # name -> spec, as the driver last asked
        self._worked: set[str] = set()  # sources that delivered frames (here or, per the driver, anywhere)
        self._running: dict[str, str] = {}  # what the current run holds
        self._run = None
        self._run_thread: threading.Thread | None = None
        self._frames = LatestFrames()
        self._runs = 0
        self._failed: dict[str, str] = {}  # name -> why, for sources that failed for good
        self._ended: set[str] = set()  # sources that ended (a file read to its end, a stream with --reconnect 0)
        self._run_error: str | None = None
        self._final: list[dict] = []  # the figures of the last run that stopped
        self._heard = time.monotonic()  # the driver's last call
        self.orphaned = False
        self._exit_when_orphaned = exit_when_orphaned  # the process ends too (its device memory freed)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._manager = threading.Thread(target=self._manage, name="streamseg-fleet-manager", daemon=True)
        if self.load_error is None:
            self._manager.start()

    # -- what the driver calls (any of the actor's threads) -------------------------------------
    def assign(self, sources: dict[str, str], worked: Iterable[str] = ()) -> None:
        """Run these sources (name -> spec) from now on; returns at once, the manager thread does the work.
        ``worked``: those that delivered frames before (on any worker): each is opened even while its stream is
        down and reconnected with the backoff, where one that never worked fails after its first try."""
        with self._lock:
            self._heard = time.monotonic()
            self._want = dict(sources)
            self._worked.update(worked)
        self._wake.set()

    def status(self) -> dict:
        """Who this is, what it runs and each running source's figures (named, with the worker's name)."""
        with self._lock:
            self._heard = time.monotonic()
            run, running = self._run, dict(self._running)
            failed, ended = dict(self._failed), sorted(self._ended)
        snapshot = run.snapshot() if run is not None else None
        sources = self._named(snapshot) if snapshot is not None else []
        return {"worker": self.name, "pid": self.pid, "incarnation": self.incarnation, "run": self._runs,
                "load_error": self.load_error, "assigned": sorted(self._want), "running": sorted(running),
                "sources": sources, "failed": failed, "ended": ended, "run_error": self._run_error,
                "orphaned": self.orphaned, "batches": snapshot.batches if snapshot else 0,
                "batch_size": snapshot.batch_size if snapshot else 0}

    def _named(self, snapshot: Snapshot) -> list[SourceFigures]:
        """Each source's figures under its fleet name (``description``: what the source is), with this worker."""
        return [dataclasses.replace(figures, description=figures.source, source=figures.name, worker=self.name)
                for figures in snapshot.sources]

    def frame(self, name: str, width: int) -> bytes | None:
        """The newest drawn frame of source ``name``, at most ``width`` wide, as a JPEG (``None``: not here)."""
        with self._lock:
            self._heard = time.monotonic()
            run, frames = self._run, self._frames
        route = run.route_index(name) if run is not None else None
        return None if route is None else frames.jpeg(route, width)

    def stop(self) -> dict:
        """Stop every source (their files closed, playable) and stay idle; the final status."""
        with self._lock:
            self._want = {}
        self._closing.set()
        self._wake.set()
        self._manager.join(timeout=STOP_WAIT + 10)
        self._stop_run()
        return {**self.status(), "sources": self._final}

    # -- the manager thread -------------------------------------------------------------------------
    def _manage(self) -> None:
        retry_at = 0.0
        while not self._closing.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            with self._lock:
                silent = time.monotonic() - self._heard
                if silent > self.config.orphan_timeout and not self.orphaned:
                    self.orphaned = True
                    log.warning("%s: no word from the driver for %.0f s: stopping its sources", self.name, silent)
                want = {} if self.orphaned else {n: s for n, s in self._want.items()
                                                  if n not in self._failed and n not in self._ended}
            if self.orphaned:
                self._stop_run()
                if self._exit_when_orphaned:
                    log.warning("%s: sources stopped, files closed; ending the worker process", self.name)
                    os._exit(0)  # an actor whose driver is gone is not restarted by Ray
                return
            thread = self._run_thread
            if thread is not None and not thread.is_alive():  # the run ended by itself (or failed)
                self._stop_run()
                retry_at = time.monotonic() + 1.0 if self._run_error else 0.0
                continue
            if want == self._running or time.monotonic() < retry_at:
                continue
            self._stop_run()
            if want:
                self._start_run(want)

    def _start_run(self, want: dict[str, str]) -> None:
        from streamseg.app import Run
        from streamseg.config import DropPolicy, RunConfig
        from streamseg.outputs.files import next_segment_number

        config, outdir = self.config, self.config.outdir
        plans = []
        for name, spec in want.items():
            folder = outdir / name
            try:
                folder.mkdir(exist_ok=True)  # OUTDIR itself must exist on this node
            except OSError as exc:
                self._fail(name, f"cannot create {folder}: {exc.strerror or exc}")
                continue
            plans.append(replace(source_plan(spec, name, outdir, json_export=config.json_export,
                                             masks_export=config.masks_export,
                                             first_segment=next_segment_number(folder / RECORDING)),
                                 resume=name in self._worked))
        if not plans:
            return
        placeholder = Path(RECORDING)  # the paths are the plans'; these only switch the kinds on
        outputs = replace(config.outputs, output=placeholder, json_path=placeholder if config.json_export else None,
                          masks_dir=None, json_segments=True, serve=None, display=False, publish=())
        run_config = RunConfig(sources=tuple(p.spec for p in plans), model=config.model, render=config.render,
                               outputs=outputs, input=replace(config.input, duration=None),
                               batch_size=config.batch_size, threads=config.forward_threads,
                               drop_policy=DropPolicy(config.drop_policy) if config.drop_policy else None)
        by_spec = {p.spec: p.name for p in plans}
        frames = LatestFrames()
        # The worker's CPUs are the budget's cores: the forward gets them, and the tuner halves them beside a
        # busy neighbour (a fixed count cannot adapt to one).
        run = Run(run_config, segmenter=self.segmenter, plans=plans, shared_sinks=[frames], cores=config.threads,
                  on_source_error=lambda spec, exc: self._fail(by_spec.get(spec, spec), failure_reason(exc)))
        self._runs += 1
        self._run_error = None
        thread = threading.Thread(target=self._body, args=(run, plans), name=f"streamseg-fleet-run{self._runs}",
                                  daemon=True)
        with self._lock:
            self._run, self._frames, self._run_thread = run, frames, thread
            self._running = {p.name: p.spec for p in plans}
        log.info("%s: running %s", self.name, ", ".join(p.name for p in plans))
        thread.start()

    def _body(self, run, plans) -> None:
        names = [p.name for p in plans]
        try:
            with run:
                report = run.run()
            for source in report.sources:
                if source.error is not None:
                    self._fail(source.name, failure_reason(source.error))
                elif source.stats is not None and source.stats.completed and not run.stopping:
                    with self._lock:
                        self._ended.add(source.name)
        except (InputError, OutputError) as exc:  # nothing of this run could start: not fixed by retrying
            if len(names) == 1 or not isinstance(exc, InputError):
                for name in names:
                    self._fail(name, failure_reason(exc))
            else:  # several sources, none opened: each was reported by on_source_error
                for name in names:
                    self._fail(name, self._failed.get(name) or failure_reason(exc))
        except BaseException as exc:  # noqa: BLE001 - a failure of the run: tried again by the manager
            self._run_error = failure_reason(exc)
            log.warning("%s: run failed: %s", self.name, self._run_error)

    def _fail(self, name: str, why: str) -> None:
        with self._lock:
            self._failed.setdefault(name, why)

    def _stop_run(self) -> None:
        with self._lock:
            run, thread = self._run, self._run_thread
        if run is not None:
            run.request_stop()
            if thread is not None:
                thread.join(timeout=STOP_WAIT)
                if thread.is_alive():
                    run.abort()
                    thread.join(timeout=10)
            snapshot = run.snapshot()
            self._final = self._named(snapshot) if snapshot is not None else []  # the run's last figures
            with self._lock:
                self._worked.update(f.source for f in self._final if f.frames_read)
        with self._lock:
            self._run, self._run_thread, self._running = None, None, {}

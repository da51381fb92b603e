"""``streamseg fleet SOURCES... -o OUTDIR``: live sources recorded by a fleet of Ray workers, one driver.

The driver (this module, the process the user talks to) starts ``--workers`` actors
(:class:`~streamseg.cluster.fleet_worker.FleetWorker`, each loading the model once, restarted by Ray
when they die: ``max_restarts``), spreads the sources over the workers that are up by count
(:func:`~streamseg.cluster.fleet_plan.spread`, moving as few as it can) and supervises them about once a
second: every worker is asked for its status; a worker that died (its call fails) or that
answers nothing for ``resume_timeout`` seconds (it is killed, so that Ray restarts it) loses its
sources to the others at once, and gets its share back when Ray has restarted it. A source that
fails for good is reported and left out; the rest go on.

Stop: :meth:`Fleet.request_stop` (SIGINT/SIGTERM in the CLI) asks every worker to stop (each closes
its files), then kills the actors, so none is left. A killed driver leaves workers that hear
nothing from it and stop their sources after ``orphan_timeout`` seconds (Ray also ends the actors
of a driver that died). ``--serve`` puts one dashboard on the driver (:mod:`streamseg.cluster.fleet_view`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamseg.closing import Closing
from streamseg.errors import InputError, describe, redact
from streamseg.outputs.files import make_output_folder
from streamseg.pipeline.stats import COUNTERS, Snapshot, SourceFigures

from .batch import expand_inputs
from .fleet_plan import FleetConfig, fleet_names, spread
from .ray_setup import import_ray, init_ray

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between two status rounds


@dataclass
class _Worker:
    name: str
    actor: object
    up: bool = False
    incarnation: str | None = None
    pid: int | None = None
    pending: object = None  # the status call in flight
    asked_at: float = 0.0
    assigned: dict[str, str] = field(default_factory=dict)  # its share: name -> spec
    told: dict[str, str] | None = None  # what it was last told to run ...
    delivered_to: str | None = None  # ... and which incarnation of it was told
    status: dict = field(default_factory=dict)
    lost: int = 0  # times it died or was killed
    lost_at: float | None = None  # when it was last lost (while down)
    dead: bool = False  # Ray will not restart it


@dataclass
class _Source:
    name: str
    spec: str
    worker: str | None = None  # where it runs now (per the last status)
    key: tuple | None = None  # (worker, incarnation, run) of the figures in `last`
    last: SourceFigures | None = None
    base: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))  # counters of earlier runs
    restarts: int = 0
    failed: str | None = None
    ended: bool = False
    down_since: float | None = None  # not running since (after it once ran)

    def fold(self) -> None:
        """Its run is over: add that run's counters to the totals of earlier runs."""
        if self.last is not None:
            self.base = self.last.totals(self.base)
            self.restarts += 1
            self.last = None

    def stopped(self, now: float) -> None:
        """It no longer runs where it ran (its worker lost, or it moved): waiting for a worker since ``now``."""
        self.fold()
        self.worker, self.key = None, None
        self.down_since = self.down_since or now

    def totals(self) -> dict[str, int]:
        """Its counters over every run so far."""
        return self.last.totals(self.base) if self.last is not None else dict(self.base)

    @property
    def worked(self) -> bool:
        """It delivered frames once: wherever it runs next, a stream that is down is waited for, not failed."""
        return self.totals()["frames_read"] > 0


@dataclass
class FleetReport:
    sources: list[_Source]
    workers_lost: int
    stopped: bool  # by a stop request (not because every source ended or failed)

    @property
    def failed(self) -> list[_Source]:
        return [s for s in self.sources if s.failed]


class Fleet(Closing):
    """The driver. ``with Fleet(config) as fleet: report = fleet.run()``; :meth:`request_stop` from any thread."""

    def __init__(self, config: FleetConfig, *, on_event: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = on_event or log.warning
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._snapshot = Snapshot(workers=[])
        self._workers: list[_Worker] = []
        self._sources: dict[str, _Source] = {}
        self.view = None
        self._ray = None
        self._started_ray = False
        self._workers_stopped = False  # every actor ended by _stop_workers
        self._closed = False

    # -- control ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def abort(self) -> None:
        """A second signal: the workers are already being stopped (each closes its files); nothing faster is safe."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def sources(self) -> dict[str, str]:
        """Every source, name -> spec (once open)."""
        return {n: s.spec for n, s in self._sources.items()}

    def snapshot(self) -> Snapshot:
        """The fleet's figures now: every source (named, with its worker), every worker. Any thread."""
        with self._lock:
            return self._snapshot

    # -- running ----------------------------------------------------------------------------------
    def open(self) -> Fleet:
        """Check the sources and OUTDIR, start or join Ray, start the workers and the dashboard."""
        ray = import_ray("streamseg fleet")
        config = self.config
        specs = expand_inputs(config.sources)
        if not specs:
            raise InputError("no sources: give URLs, camera:N or text files of them")
        names = fleet_names(specs)
        self._sources = {n: _Source(n, s) for n, s in zip(names, specs)}
        outdir = config.outdir
        make_output_folder(outdir)
        self._ray = ray
        self._started_ray = not ray.is_initialized() and not config.ray_address
        init_ray(ray, config.ray_address, config.gpus_per_worker, config.workers, config.cpus_per_worker)
        from .fleet_worker import FleetWorker

        actor_config = dataclasses.replace(
            config, outdir=outdir.resolve(), render=dataclasses.replace(config.render, show_fps=False),
            model=config.model if config.gpus_per_worker else dataclasses.replace(config.model, device="cpu"))
        remote = ray.remote(FleetWorker).options(
            max_restarts=config.max_restarts, max_task_retries=0, max_concurrency=8,
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None)
        self._workers = [_Worker(f"worker-{k}", remote.remote(actor_config, f"worker-{k}"))
                         for k in range(config.workers)]
        if config.serve is not None:
            from .fleet_view import FleetView

            self.view = FleetView(config.serve, names=names, stats=self.snapshot, fetch=self._fetch_frame,
                                  fps=config.relay_fps, token=config.serve_token, hosts=config.serve_hosts)
        self._publish()
        return self

    def run(self) -> FleetReport:
        """Supervise until a stop request, ``--duration``, or every source ended or failed; then stop the workers."""
        if self._ray is None:
            self.open()
        deadline = None if self.config.input.duration is None else time.monotonic() + self.config.input.duration
        try:
            while not self._stop.is_set():
                self._round()
                self._publish()
                if all(s.failed or s.ended for s in self._sources.values()):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self._stop.set()
                    break
                self._stop.wait(POLL)
        finally:
            self._stop_workers()
        self._publish()
        return FleetReport(list(self._sources.values()), sum(w.lost for w in self._workers), self._stop.is_set())

    def _round(self) -> None:
        ray = self._ray
        now = time.monotonic()
        for w in self._workers:
            if w.pending is None:
                w.pending, w.asked_at = w.actor.status.remote(), now
        pending = [w.pending for w in self._workers]
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=min(POLL, 0.5))
        ready = set(ready)
        for w in self._workers:
            if w.pending in ready:
                ref, w.pending = w.pending, None
                try:
                    self._on_status(w, ray.get(ref))
                except ray.exceptions.ActorDiedError as exc:  # for good: no restart left
                    self._on_lost(w, _actor_error(exc), dead=True)
                except ray.exceptions.RayActorError as exc:  # restarting
                    self._on_lost(w, _actor_error(exc))
            elif w.up and now - w.asked_at > self.config.resume_timeout:  # waited already: its sources move now
                self._on_lost(w, f"no answer for {now - w.asked_at:.0f} s", wait=False)
                ray.kill(w.actor, no_restart=False)  # Ray restarts it; its sources move meanwhile
                w.pending = None
        self._reassign()

    def _on_status(self, w: _Worker, status: dict) -> None:
        if status.get("load_error"):
            raise InputError(status["load_error"])  # the model: every worker would fail the same way
        if w.incarnation != status["incarnation"]:
            if w.incarnation is not None:
                self.say(f"{w.name} is back (pid {status['pid']})")
            w.incarnation = status["incarnation"]  # a new process: it runs nothing until told
        w.up, w.pid, w.status, w.lost_at, w.dead = True, status["pid"], status, None, False
        for name, why in status["failed"].items():
            source = self._sources.get(name)
            if source is not None and source.failed is None:
                source.failed = why
                self.say(f"source {name} failed: {why}")
        for name in status["ended"]:
            source = self._sources.get(name)
            if source is not None and not source.ended:
                source.ended = True
                self.say(f"source {name} ended")
        for figures in status["sources"]:
            source = self._sources.get(figures.source)
            if source is None:
                continue
            key = (w.name, status["incarnation"], status["run"])
            if source.key != key:  # a new run of this source: what the earlier one counted is kept
                source.fold()
                if source.down_since is not None:
                    self.say(f"source {source.name} resumed on {w.name} after "
                             f"{time.monotonic() - source.down_since:.1f} s")
                    source.down_since = None
                source.key = key
            source.worker, source.last = w.name, figures

    def _on_lost(self, w: _Worker, why: str, *, dead: bool = False, wait: bool = True) -> None:
        """``w`` died or hangs. Its sources wait ``move_after`` seconds for Ray to restart it, unless it is ``dead``
        (no restart left) or they were already kept waiting (``wait=False``)."""
        w.dead = w.dead or dead
        if not w.up:
            return
        wait = wait and not dead
        w.up, w.lost = False, w.lost + 1
        w.lost_at = time.monotonic() - (0.0 if wait else self.config.move_after)
        note = f" if it is not back within {self.config.move_after:g} s" if wait else ""
        self.say(f"{w.name} lost ({why}): its sources move to the other workers{note}")
        now = time.monotonic()
        for source in self._sources.values():
            if source.worker == w.name:
                source.stopped(now)

    def _reassign(self) -> None:
        """Spread the sources over the workers that are up, and over those lost less than ``move_after`` ago that
        Ray is restarting (their sources wait for them rather than stop and start twice elsewhere)."""
        now = time.monotonic()
        holders = [w for w in self._workers
                   if w.up or (not w.dead and w.lost_at is not None and now - w.lost_at < self.config.move_after)]
        live = [n for n, s in self._sources.items() if not (s.failed or s.ended)]
        plan = spread(live, [w.name for w in holders], {w.name: list(w.assigned) for w in holders})
        for w in self._workers:
            want = {n: self._sources[n].spec for n in plan.get(w.name, [])}
            if not w.up and w.assigned and not want:
                self.say(f"{w.name} is still lost: moving its {len(w.assigned)} "
                         f"source{'s' if len(w.assigned) != 1 else ''} to the other workers")
            for name in set(w.assigned) - set(want):  # re-spread: it stops here and starts on another worker
                source = self._sources[name]
                if source.worker == w.name:
                    source.stopped(now)
            w.assigned = want
            if w.up and (want != w.told or w.delivered_to != w.incarnation):
                w.actor.assign.remote(want, [n for n in want if self._sources[n].worked])
                w.told, w.delivered_to = want, w.incarnation

    def _publish(self) -> None:
        rows = []
        for source in self._sources.values():
            row = dataclasses.replace(source.last or SourceFigures(source=source.name), **source.totals(),
                                      source=source.name, worker=source.worker or "", restarts=source.restarts,
                                      description=redact(source.spec))
            if source.failed:
                row.error = source.failed
            elif source.ended:
                row.ended = True
            elif source.worker is None:
                row.connected = False  # waiting for a worker: /healthz says so
            rows.append(row)
        workers = [{"worker": w.name, "up": w.up, "pid": w.pid, "lost": w.lost,
                    "sources": sorted(w.assigned), "batch_size": w.status.get("batch_size", 0)}
                   for w in self._workers]
        snap = Snapshot(rows, workers=workers, batches=sum(w.status.get("batches", 0) for w in self._workers if w.up),
                        batch_size=max((w.status.get("batch_size", 0) for w in self._workers if w.up), default=0))
        with self._lock:
            self._snapshot = snap

    def _fetch_frame(self, name: str) -> bytes | None:
        """The dashboard's relay: source ``name``'s newest frame from the worker running it, scaled down."""
        source = self._sources.get(name)
        worker = next((w for w in self._workers if source is not None and w.name == source.worker and w.up), None)
        if worker is None:
            return None
        return self._ray.get(worker.actor.frame.remote(name, self.config.relay_width), timeout=2.0)

    def _stop_workers(self) -> None:
        """Every worker stops its sources (files closed); then the actors are ended, none left behind."""
        ray = self._ray
        if ray is None or not self._workers:
            return
        refs = {w.name: w.actor.stop.remote() for w in self._workers}
        for w in self._workers:
            try:
                final = ray.get(refs[w.name], timeout=60)
                for figures in final.get("sources", []):  # the last figures of each source
                    source = self._sources.get(figures.source)
                    if source is not None and source.worker == w.name:
                        source.last = figures
            except (ray.exceptions.RayError, TimeoutError) as exc:
                log.debug("%s did not stop cleanly: %s", w.name, exc)
        for w in self._workers:
            ray.kill(w.actor, no_restart=True)
        self._workers_stopped = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.view is not None:
                self.view.close()
            if self._ray is not None:
                if not self._workers_stopped:
                    for w in self._workers:
                        self._ray.kill(w.actor, no_restart=True)
                if self._started_ray:
                    self._ray.shutdown()
        except Exception as exc:  # noqa: BLE001 - closing down: one line at debug, never a traceback
            log.debug("closing the fleet: %s", exc)


def _actor_error(exc: BaseException) -> str:
    """Why a worker's call failed, in a few words (Ray's own message runs to a paragraph)."""
    import ray.exceptions

    if isinstance(exc, ray.exceptions.ActorDiedError):
        return "it died and Ray will not restart it"
    if isinstance(exc, ray.exceptions.ActorUnavailableError):
        return "its process ended; Ray is restarting it"
    return describe(exc, 160)


def fleet_summary(report: FleetReport) -> list[str]:
    """One line per source, then the totals."""
    lines = []
    for s in report.sources:
        total = s.totals()
        state = f"failed: {s.failed}" if s.failed else "ended" if s.ended else "stopped"
        lines.append(f"[{s.name}] {total['frames_written']} frames written, {total['frames_dropped']} dropped, "
                     f"{s.restarts} restarts; {state}")
    lines.append(f"{len(report.sources)} sources, {len(report.failed)} failed; workers lost {report.workers_lost} "
                 f"times")
    return lines


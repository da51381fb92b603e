"""One run, built in one place: model, sources, outputs and pipeline, then a report.

Every entry point builds its runs here: the CLI (``streamseg INPUT...``), ``streamseg batch``
(one run per input inside each Ray actor, the model loaded once per actor) and the benchmark.
A single source is simply a run with one route.

    run = Run(config)               # nothing opened yet
    run.open()                      # plan outputs, open sources, load the model, open outputs
    report = run.run()              # the pipeline, to the end, a stop or an error
    run.close()                     # or: with Run(config) as run: ...

Order of opening: outputs are planned and checked first, then local sources (files, folders,
cameras) are opened, so a bad path fails before a slow model load; network streams are
opened after the model, so that no backlog builds up meanwhile. A source that cannot be
opened is reported (``on_source_error``) and the others go on; when none can be opened the
run fails with that source's error (or, with several, a summary). :meth:`request_stop` and
:meth:`abort` may be called from any thread (signal handlers, a window's ``q``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamseg.models.segmenter import Segmenter
from streamseg.models.tracking import Tracked
from streamseg.outputs.plan import RouteOutputs, RoutePlan, check_route, open_outputs, plan_routes
from streamseg.pipeline.pipeline import Pipeline, Route
from streamseg.pipeline.schedule import EveryNth
from streamseg.pipeline.stats import RunStats, Snapshot
from streamseg.pipeline.threads import ThreadTuner
from streamseg.pipeline.threads import apply as apply_threads
from streamseg.pipeline.threads import plan as plan_threads
from streamseg.render.renderer import Renderer
from streamseg.sources.names import is_url
from streamseg.sources.open import open_source
from streamseg.sources.stills import ImageSource

from .closing import Closing
from .config import Blend, Encoder, RunConfig, Task
from .errors import InputError, SourceError
from .frames import Segment, SegmentationResult
from .roles import Sink, Source

log = logging.getLogger(__name__)

DEFAULT_SIZE = (480, 640)  # (height, width) to warm a model up at for a live source whose size is not known yet


@dataclass(frozen=True)
class Written:
    """An output as it was named (``path``) and the files written under it."""

    path: Path
    files: tuple[Path, ...]


@dataclass
class SourceReport:
    """What one source gave: its figures (``None`` if it never opened), its error, what was written."""

    spec: str
    name: str
    stats: RunStats | None = None
    error: BaseException | None = None
    written: list[Written] = field(default_factory=list)
    parts: list[Segment] | None = None  # a single still image: its visible segments ("Segmented parts")


@dataclass
class RunReport:
    sources: list[SourceReport]
    total: RunStats
    threads: str = ""  # what the thread budget chose

    @property
    def failed(self) -> bool:
        """Some source failed to open or while running."""
        return any(s.error is not None for s in self.sources)

    @property
    def written(self) -> list[Written]:
        return [w for s in self.sources for w in s.written]


@dataclass
class _OpenRoute:
    plan: RoutePlan
    source: Source
    renderer: Renderer
    outputs: RouteOutputs

    @property
    def single_still(self) -> bool:
        return isinstance(self.source, ImageSource) and not self.source.is_folder


class Run(Closing):
    """Builds and runs one :class:`~streamseg.pipeline.pipeline.Pipeline` from a :class:`~streamseg.config.RunConfig`.

    ``segmenter``: an already loaded model to use (``streamseg batch`` and ``fleet`` load it once per actor);
    by default the run loads ``config.model``. ``plans``: each source's outputs, already planned (a fleet
    worker's ``OUTDIR/NAME/`` layout), instead of :func:`~streamseg.outputs.plan.plan_routes`. ``shared_sinks``:
    sinks every route also writes to, not owned by the run (a fleet worker's newest-frame store). ``cores``: the
    cores the thread budget shares out (default: this process's; a fleet worker's: its Ray CPUs).
    ``require_output``: a run that would write and show nothing is an :class:`~streamseg.errors.InputError`
    once the local inputs are checked, before the model loads (the command line's rule).
    """

    def __init__(self, config: RunConfig, *, segmenter: Segmenter | None = None,
                 on_source_error: Callable[[str, SourceError], None] | None = None,
                 plans: Sequence[RoutePlan] | None = None, shared_sinks: Sequence[Sink] = (),
                 cores: int | None = None, require_output: bool = False) -> None:
        self.config = config
        self._require_output = require_output
        self.segmenter = segmenter
        self._plans = None if plans is None else list(plans)
        self._shared_sinks = list(shared_sinks)
        self.threads = plan_threads(config.threads, cores=cores, managed=config.manage_threads)
        self.tuner: ThreadTuner | None = None  # the forward's thread count, chosen while running (CPU)
        self.server = None  # the live view (--serve), once open
        self._on_source_error = on_source_error or (lambda spec, exc: log.error("%s", exc))
        self._stack = contextlib.ExitStack()
        self._routes: list[_OpenRoute] = []
        self._failed: list[tuple[RoutePlan, SourceError]] = []
        self._pipeline: Pipeline | None = None
        self._lock = threading.Lock()
        self._stop_requested = self._abort_requested = False
        self._opened = self._closed = False

    # -- opening (the caller's thread) ------------------------------------------------------
    def open(self) -> Run:
        """Check the outputs, open the sources, load the model, open the outputs. Raises
        :class:`~streamseg.errors.InputError` for bad paths, models and outputs; closes what it opened."""
        if self._opened:
            return self
        self._opened = True
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        config = self.config
        apply_threads(self.threads)  # torch's and OpenCV's pools are process-wide: set before the model runs
        plans = self._plans if self._plans is not None else plan_routes(config.sources, config.outputs)
        sources: dict[int, Source] = {}
        local = [i for i, plan in enumerate(plans) if not is_url(plan.spec)]
        for i in local:
            self._try_open(plans[i], i, sources)
        if local and len(self._failed) == len(plans):
            raise self._nothing_opened(plans)
        if self._require_output and not self._shared_sinks and not config.outputs.anything:
            raise InputError("nothing to write or show: --no-display without -o, --json, --masks or --serve "
                             "(add -o out.mp4, or leave out --no-display to watch)")
        if self.segmenter is None:
            self.segmenter = Segmenter.load(config.model)
        warmed = len(local) < len(plans) and self.segmenter.input_size_fixed()
        if warmed:  # before the streams are opened: what they send while the model converts is not waiting for us
            self._warm_up([DEFAULT_SIZE])
        for i, plan in enumerate(plans):
            if i not in local:
                self._try_open(plan, i, sources)
        if not sources:
            raise self._nothing_opened(plans)
        if not warmed:
            self._warm_up([getattr(s, "frame_size", None) or DEFAULT_SIZE for s in sources.values() if s.live])
        self.segmenter.reset()  # no state carried over from an earlier run
        shared = list(self._shared_sinks)
        if config.outputs.serve is not None:
            from streamseg.serve.server import PreviewServer

            head = self.segmenter.head  # the page shows the controls the model takes as soon as it is served
            self.server = self._stack.enter_context(
                PreviewServer(config.outputs.serve, token=config.outputs.serve_token, sources=len(sources),
                              hosts=config.outputs.serve_hosts, prompts=head.prompt_control, points=head.point_control))
            shared.append(self.server)
        for i in sorted(sources):
            renderer = Renderer(config.render, self.segmenter.id2label, self.segmenter.num_labels)
            outputs = open_outputs(plans[i], sources[i], config.outputs, colours=renderer.colours, shared=shared,
                                   on_quit=self.request_stop, encode_threads=self.threads.encode,
                                   encoder=self._encoder())
            self._stack.callback(outputs.close)  # also when the run never starts; close() is idempotent
            self._routes.append(_OpenRoute(plans[i], sources[i], renderer, outputs))

    def _warm_up(self, sizes) -> None:
        """The model runs once at each picture size (height, width) before live frames flow: converting and
        compiling for a size (seconds with OpenVINO) would otherwise hold the first frame while the live policy
        drops the rest. A model whose input size does not depend on the picture's is warmed up before the streams
        are opened (their frames do not pile up meanwhile). A failure here is left to the first batch to report."""
        for size in sorted(set(sizes))[:4]:
            try:
                took = self.segmenter.warm_up(size)
            except Exception as exc:  # noqa: BLE001 - the pipeline's first batch meets it again and says it properly
                log.debug("warming the model up at %dx%d failed: %s", size[1], size[0], exc)
                return
            log.info("model warmed up at %dx%d in %.1f s", size[1], size[0], took)

    def _try_open(self, plan: RoutePlan, index: int, sources: dict[int, Source]) -> None:
        inp = self.config.input
        try:
            source = self._stack.enter_context(open_source(plan.spec, timeout=inp.timeout, reconnect=inp.reconnect,
                                                           reconnect_max_delay=inp.reconnect_max_delay,
                                                           decode_threads=self.threads.decode,
                                                           resume=plan.resume))
        except SourceError as exc:
            self._failed.append((plan, exc))
            if len(self.config.sources) > 1:
                self._on_source_error(plan.spec, exc)
            return
        check_route(plan, source)
        sources[index] = source

    def _nothing_opened(self, plans: list[RoutePlan]) -> SourceError:
        if len(plans) == 1:
            return self._failed[0][1]
        return SourceError(f"none of the {len(plans)} inputs could be opened")

    # -- what the caller may ask once open -------------------------------------------------
    @property
    def sources(self) -> list[Source]:
        return [r.source for r in self._routes]

    @property
    def live(self) -> bool:
        return any(r.source.live for r in self._routes)

    @property
    def expected_frames(self) -> int | None:
        """Frames the run will write when read to the end, if every source knows it (files, folders)."""
        counts = [None if r.source.live else r.source.expected_frames for r in self._routes]
        return None if not counts or None in counts else sum(counts)

    def route_index(self, name: str) -> int | None:
        """The route (``Frame.source``) of the source named ``name``, if it is open."""
        return next((i for i, r in enumerate(self._routes) if r.plan.name == name), None)

    def snapshot(self) -> Snapshot | None:
        """The running pipeline's live figures (:meth:`Pipeline.snapshot`), each source with its ``name``;
        ``None`` before it starts. Any thread."""
        pipeline = self._pipeline
        if pipeline is None:
            return None
        snap = pipeline.snapshot()
        for figures, route in zip(snap.sources, self._routes):
            figures.name = route.plan.name
        return snap

    # -- control (any thread) --------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful: stop reading; what was read is still segmented and written."""
        with self._lock:
            self._stop_requested = True
            pipeline = self._pipeline
        if pipeline is not None:
            pipeline.request_stop()

    def abort(self) -> None:
        """Fast: stop reading and inferring; what was inferred is written, the outputs are closed."""
        with self._lock:
            self._stop_requested = self._abort_requested = True
            pipeline = self._pipeline
        if pipeline is not None:
            pipeline.abort()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    # -- running (the caller's thread) -----------------------------------------------------
    def run(self, *, on_frame: Callable[[RunStats], None] | None = None) -> RunReport:
        """Run to the end of the sources, a stop, or the first error (re-raised here, with its cause).

        Opens the run first if :meth:`open` was not called. The outputs are closed when this returns.
        """
        self.open()
        config = self.config
        stills: dict[int, list[SegmentationResult]] = {i: [] for i, r in enumerate(self._routes) if r.single_still}
        routes = [Route(r.source, r.renderer, r.outputs.sink, r.outputs.exports) for r in self._routes]

        def on_result(result: SegmentationResult) -> None:
            if result.frame.source in stills:
                stills[result.frame.source].append(result)

        self._choose_blending()
        segment = self.segmenter.segment
        if self.threads.tuned_counts is not None and self.segmenter.device.type == "cpu":
            segment = self.tuner = ThreadTuner(segment, self.threads.tuned_counts)
        if config.model.infer_every > 1:
            segment = EveryNth(segment, config.model.infer_every)
        if self.segmenter.task is not Task.SEMANTIC and not self.segmenter.head.tracks_itself:  # instance/panoptic
            segment = Tracked(segment, buffer=config.model.track_buffer)
        pipeline = Pipeline(routes, segment, batch_size=config.batch_size,
                            channel_size=config.channel_size, drop_policy=config.drop_policy,
                            duration=config.input.duration, on_frame=on_frame,
                            on_result=on_result if stills else None, max_latency=config.input.max_latency)
        with self._lock:
            self._pipeline = pipeline
            if self._abort_requested:
                pipeline.abort()
            elif self._stop_requested:
                pipeline.request_stop()
        if self.server is not None:
            self.server.stats = pipeline.snapshot
        total = pipeline.run()
        return self._report(routes, total, stills)

    def written(self, route: _OpenRoute | None = None) -> list[Written]:
        """What the outputs hold so far (of one route, or of all): after a failure, what was kept."""
        return [Written(Path(o.path), tuple(o.written))  # every output that writes files has their path or folder
                for r in ([route] if route is not None else self._routes)
                for o in r.outputs.owned if o.written]

    def _report(self, routes: list[Route], total: RunStats, stills: dict[int, list[SegmentationResult]]) -> RunReport:
        by_spec = {}
        for i, (opened, route) in enumerate(zip(self._routes, routes)):
            written = self.written(opened)
            parts = None
            if i in stills:
                parts = [seg for result in stills[i] for seg in result.segments() if opened.renderer.shows(seg.label_id)]
            by_spec[id(opened.plan)] = SourceReport(opened.plan.spec, opened.plan.name, route.stats, route.error,
                                                    written, parts)
        for plan, exc in self._failed:
            by_spec[id(plan)] = SourceReport(plan.spec, plan.name, error=exc)
        plans = [r.plan for r in self._routes] + [plan for plan, _ in self._failed]
        order = {spec: k for k, spec in enumerate(self.config.sources)}
        reports = [by_spec[id(p)] for p in sorted(plans, key=lambda p: order[p.spec])]
        engine = f"engine {self.segmenter.engine_text}; " if self.segmenter is not None else ""
        return RunReport(reports, total, engine + self.threads.describe(self.tuner))

    def _encoder(self) -> str:
        """``--encoder``; auto: NVENC when the model runs on CUDA and the GPU can encode (the CPU stays free for
        the rest), else libx264 without a warning."""
        from streamseg.outputs.video import auto_encoder

        chosen = self.config.outputs.encoder
        if chosen is Encoder.AUTO:
            return auto_encoder(self.segmenter.device.type)
        return chosen.value

    def _choose_blending(self) -> None:
        """Draw the style on the model's device (``--blend``) when it can be: semantic models, fill, mask,
        blur- and replace-background. The segmenter keeps the choice for this run only."""
        from streamseg.render.device import STYLES, DeviceBlender

        render, device = self.config.render, self.segmenter.device
        wanted = render.blend is Blend.DEVICE or (render.blend is Blend.AUTO and device.type == "cuda")
        blender = DeviceBlender(self._routes[0].renderer, device) if wanted and self._routes and render.style in STYLES else None
        if not self.segmenter.draw_on_device(blender) and render.blend is Blend.DEVICE:
            log.info("--blend device: %s is drawn on the host (the device draws fill, mask, blur- and "
                     "replace-background of semantic models)", render.style.value)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stack.close()

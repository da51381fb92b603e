"""Where each source's results go: output names and paths planned once, then opened from one table of kinds.

Planning (:func:`plan_routes`) is pure: it names every source, gives each its output paths
(one source: the paths as given; several: ``DIR/NAME.mp4`` or a ``{name}``/``{index}``
pattern, ``seg-NAME.jsonl``, ``masks/NAME/``) and checks them against the one rule for
output folders. Opening (:func:`open_outputs`) builds a route's sink and exports from
:data:`SINK_KINDS` and :data:`EXPORT_KINDS`; a new kind of output is one entry there.

**The folder rule**, for every output (``-o``, ``--json``, ``--masks``, each segment file):
the folder an output goes *into* must exist; the output itself (a file, or a folder for
``-o DIR``/``--masks DIR``) is created. So ``-o results/`` creates ``results/`` when its
parent exists, and ``-o missing/x.mp4`` is refused with ``output folder does not exist``.
A typo or an unmounted disk is never silently replaced by a new folder tree.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from streamseg.closing import close_all
from streamseg.config import MasksBy, OutputConfig
from streamseg.errors import OutputError
from streamseg.roles import Export, Sink, Source
from streamseg.sources.names import IMAGE_EXTENSIONS, is_url, safe_name
from streamseg.sources.stills import ImageSource

from .exports import JsonLinesExport, MaskPngExport, SegmentedJsonExport
from .files import check_parent_folder, check_replaceable, free_path, make_output_folder, same_file, segment_names, special_file
from .images import ImageSink
from .sinks import NullSink, TeeSink
from .video import VIDEO_SUFFIXES, SegmentedVideoSink, VideoFileSink
from .window import WindowSink

log = logging.getLogger(__name__)


class OutputKind(str, enum.Enum):
    """What ``-o PATH`` (and the export flags) turn into."""

    VIDEO = "video"  # an H.264 MP4/MOV/MKV file
    SEGMENTS = "segments"  # rotating video files (--segment-time)
    IMAGE = "image"  # one still
    IMAGE_FOLDER = "image-folder"  # one PNG per frame
    JSON = "json"  # JSON Lines records (--json)
    MASKS = "masks"  # one label PNG per frame (--masks)


@dataclass(frozen=True)
class OutputContext:
    """What opening an output may need besides its path."""

    source: Source
    config: OutputConfig
    colours: object  # the renderer's class palette, for mask PNGs
    encode_threads: int = 0  # x264 threads per video file (0: x264's own choice)
    encoder: str = "libx264"  # the H.264 encoder video files ask for (libx264 when it cannot open)


SINK_KINDS: dict[OutputKind, Callable[[Path, OutputContext], Sink]] = {
    OutputKind.VIDEO: lambda path, ctx: VideoFileSink(path, audio_from=ctx.source.audio_path, fps=ctx.source.fps,
                                                      live=ctx.source.live, threads=ctx.encode_threads,
                                                      encoder=ctx.encoder),
    OutputKind.SEGMENTS: lambda path, ctx: SegmentedVideoSink(path, ctx.config.segment_time, fps=ctx.source.fps,
                                                              live=ctx.source.live, threads=ctx.encode_threads,
                                                              encoder=ctx.encoder),
    OutputKind.IMAGE: lambda path, ctx: ImageSink(path, folder=False),
    OutputKind.IMAGE_FOLDER: lambda path, ctx: ImageSink(path, folder=True),
}
EXPORT_KINDS: dict[OutputKind, Callable[[Path, OutputContext], Export]] = {
    OutputKind.JSON: lambda path, ctx: (
        SegmentedJsonExport(path, ctx.config.segment_time, fps=ctx.source.fps, masks=ctx.config.json_masks,
                            live=ctx.source.live) if ctx.config.json_segments and ctx.config.segment_time
        else JsonLinesExport(path, masks=ctx.config.json_masks, live=ctx.source.live)),
    OutputKind.MASKS: lambda path, ctx: MaskPngExport(path, ctx.colours, by_track=ctx.config.masks_by is MasksBy.TRACK),
}


def output_kind(path: Path, config: OutputConfig) -> OutputKind:
    """The kind of ``-o PATH``: by its suffix; no suffix (or an existing folder) is a folder of PNGs."""
    suffix = path.suffix.lower()
    if config.segment_time is not None:
        if suffix not in VIDEO_SUFFIXES:
            raise OutputError(f"--segment-time writes video files; {path} is not one "
                              f"({', '.join(sorted(VIDEO_SUFFIXES))})")
        return OutputKind.SEGMENTS
    if suffix in VIDEO_SUFFIXES:
        return OutputKind.VIDEO
    if suffix in IMAGE_EXTENSIONS:
        return OutputKind.IMAGE
    if not suffix or path.is_dir():
        return OutputKind.IMAGE_FOLDER
    raise OutputError(f"unsupported output {path}: use a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                      f"an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a folder")


# -- planning ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoutePlan:
    """One source's name and output paths (``None``: not written)."""

    spec: str
    name: str
    output: Path | None
    kind: OutputKind | None
    json_path: Path | None
    masks_dir: Path | None
    folders: tuple[Path, ...] = ()  # folders that hold several sources' outputs, created when opening
    resume: bool = False  # it delivered frames before (a fleet source moved or restarted): waited for if down


def source_name(spec: str) -> str:
    """A file-name-safe name for a source: the file's stem, ``camera-0``, or the URL's host, port and path."""
    if spec.startswith("camera:"):
        return "camera-" + spec.split(":", 1)[1]
    if is_url(spec):
        u = urlparse(spec)
        text = f"{u.hostname or 'stream'}{'-' + str(u.port) if u.port else ''}{u.path}"
    else:
        text = Path(spec).stem or Path(spec).name
    return safe_name(text, "source")


def unique_names(specs: Sequence[str]) -> list[str]:
    """:func:`source_name` of each, with ``-1``, ``-2``... added to names that repeat."""
    names: list[str] = []
    for spec in specs:
        name = base = source_name(spec)
        k = 1
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def plan_routes(specs: Sequence[str], config: OutputConfig) -> list[RoutePlan]:
    """Every source's outputs, checked against the folder rule. Raises :class:`OutputError`.

    One source writes to the paths as given. Several write into ``-o DIR`` (``DIR/NAME.mp4``)
    or a pattern with ``{name}``/``{index}``, to ``JSON-NAME.jsonl`` and to ``MASKS/NAME/``.
    """
    names = unique_names(specs)
    if len(specs) == 1:
        outputs, folders = [config.output], []
        json_paths, masks_dirs = [config.json_path], [config.masks_dir]
    else:
        outputs, folders = _many_outputs(config.output, names)
        json_paths = [None if config.json_path is None else
                      config.json_path.with_name(f"{config.json_path.stem}-{n}{config.json_path.suffix}") for n in names]
        masks_dirs = [None if config.masks_dir is None else config.masks_dir / n for n in names]
        if config.masks_dir is not None:
            folders.append(config.masks_dir)
    for folder in folders:
        make_output_folder(folder, create=False)
    plans = []
    for spec, name, out, json_path, masks in zip(specs, names, outputs, json_paths, masks_dirs):
        kind = None if out is None else output_kind(out, config)
        for flag, path, is_folder in (("-o", out, kind is OutputKind.IMAGE_FOLDER), ("--json", json_path, False),
                                      ("--masks", masks, True)):
            if path is None or path.parent in folders:  # inside a folder checked above
                continue
            if special_file(path):  # a device, FIFO or socket: JSON Lines stream into it; nothing else does
                if flag != "--json":
                    raise OutputError(f"{flag} {path} is not a regular file (a device, FIFO or socket): write "
                                      f"{'the video or image' if flag == '-o' else 'the masks'} to a file or folder")
                continue
            if is_folder:
                make_output_folder(path, create=False)
            elif path.is_dir():
                raise OutputError(f"output is a folder, not a file: {path}")
            else:
                check_parent_folder(path)
                check_replaceable(path)
        plans.append(RoutePlan(spec=spec, name=out.stem if out is not None and len(specs) > 1 else name, output=out,
                               kind=kind, json_path=json_path, masks_dir=masks, folders=tuple(folders)))
    _refuse_shared_paths(plans, specs)
    _refuse_inputs_as_outputs(plans, specs)
    return plans


def _many_outputs(output: Path | None, names: list[str]) -> tuple[list[Path | None], list[Path]]:
    if output is None:
        return [None] * len(names), []
    text = str(output)
    if "{" in text:
        try:
            paths = [Path(text.format(name=n, index=i)) for i, n in enumerate(names)]
        except (KeyError, IndexError, ValueError) as exc:
            raise OutputError(f"invalid output pattern {text!r}: use {{name}} and/or {{index}}") from exc
        if len(set(paths)) < len(paths):
            raise OutputError(f"output pattern {text!r} gives several inputs the same file: add {{name}} or {{index}}")
        return list(paths), []
    if output.suffix.lower() in VIDEO_SUFFIXES | IMAGE_EXTENSIONS:
        raise OutputError(f"{len(names)} inputs cannot share one file {output}: give a folder, or a pattern "
                          "such as out/{name}.mp4")
    return [output / f"{n}.mp4" for n in names], [output]


def _refuse_shared_paths(plans: list[RoutePlan], specs: Sequence[str]) -> None:
    """Two outputs of one run never write the same file."""
    seen: dict[Path, str] = {}
    for plan in plans:
        for flag, path in (("-o", plan.output), ("--json", plan.json_path), ("--masks", plan.masks_dir)):
            if path is None:
                continue
            key = path.resolve()
            if key in seen:
                raise OutputError(f"{flag} {path} is also {seen[key]}: give each output its own path")
            seen[key] = f"{flag} {path}"


def _refuse_inputs_as_outputs(plans: list[RoutePlan], specs: Sequence[str]) -> None:
    """No output may write over an input: the same file (links followed), an input folder used as an output
    folder, or an input that a segment, frame or mask file would be named like."""
    inputs = [Path(spec) for spec in specs if not is_url(spec) and not spec.startswith("camera:") and Path(spec).exists()]
    for plan in plans:
        for flag, path, kind in (("-o", plan.output, plan.kind), ("--json", plan.json_path, OutputKind.JSON),
                                 ("--masks", plan.masks_dir, OutputKind.MASKS)):
            if path is None:
                continue
            for inp in inputs:
                if _writes_over(path, kind, inp):
                    raise OutputError(f"{flag} {path} would write over the input {inp}: write the output elsewhere")


def _writes_over(path: Path, kind: OutputKind, inp: Path) -> bool:
    if same_file(path, inp):
        return True
    if kind is OutputKind.SEGMENTS:
        return same_file(path.parent, inp.parent) and bool(segment_names(path).match(inp.name))
    if kind in (OutputKind.IMAGE_FOLDER, OutputKind.MASKS) and inp.is_file() and same_file(path, inp.parent):
        numbered = inp.suffix.lower() == ".png" and inp.stem.isdigit() and len(inp.stem) == 6  # 000012.png
        still = kind is OutputKind.IMAGE_FOLDER and inp.suffix.lower() == ".png"  # a still a.png -> a.png
        return numbered or still
    return False


def check_route(plan: RoutePlan, source: Source) -> None:
    """Outputs that cannot hold what the source gives: one image for many frames."""
    single_still = isinstance(source, ImageSource) and not source.is_folder
    if plan.kind is OutputKind.IMAGE and not single_still:
        raise OutputError(f"{plan.output} holds one image, but {source.description} has many frames; "
                          "write to a video (.mp4) or a folder")


# -- opening -------------------------------------------------------------------------------
@dataclass
class RouteOutputs:
    """A route's opened sink and exports. ``sink`` writes to every sink of the route (a tee when several)."""

    sink: Sink
    exports: list[Export]
    owned: list  # what this route must close (not the shared live view)

    @property
    def written(self) -> list[Path]:
        return [p for o in self.owned for p in o.written]

    def close(self) -> None:
        close_all(self.owned)


def open_outputs(plan: RoutePlan, source: Source, config: OutputConfig, *, colours: object,
                 shared: Sequence[Sink] = (), on_quit: Callable[[], None] | None = None,
                 encode_threads: int = 0, encoder: str = "libx264") -> RouteOutputs:
    """Open one route's exports and sinks (created in the caller's thread, so a bad path fails before any
    worker starts); ``shared`` sinks (the live view) are written but not owned. All closed again if one fails."""
    ctx = OutputContext(source=source, config=config, colours=colours, encode_threads=encode_threads, encoder=encoder)
    owned: list = []
    try:
        window = []  # first: a display that cannot be used fails before any file is created
        if config.display:
            window.append(WindowSink(f"streamseg - {source.description}", on_quit=on_quit))
            owned += window
        for folder in plan.folders:
            make_output_folder(folder)
        exports = [EXPORT_KINDS[kind](_target(path, kind, source), ctx) for kind, path in
                   ((OutputKind.JSON, plan.json_path), (OutputKind.MASKS, plan.masks_dir)) if path is not None]
        owned += exports
        sinks: list[Sink] = []
        if plan.output is not None:
            if plan.kind is OutputKind.IMAGE_FOLDER and not plan.output.exists():
                log.info("creating output folder %s", plan.output)
            sinks.append(SINK_KINDS[plan.kind](_target(plan.output, plan.kind, source), ctx))
            owned += sinks
        for target in config.publish:  # streams to publish, each from its own thread
            from .publish import Publisher

            sinks.append(Publisher(target, fps=source.fps, reconnect=config.publish_reconnect,
                                   reconnect_max_delay=config.publish_reconnect_max_delay, hls_time=config.hls_time,
                                   connect_timeout=config.publish_timeout, stall_timeout=config.publish_timeout,
                                   live=source.live,
                                   hls_list_size=config.hls_list_size, audio_from=source.audio_path))
            owned.append(sinks[-1])
        sinks += window
    except BaseException:
        close_all(owned)
        raise
    every = [*sinks, *shared]
    sink = every[0] if len(every) == 1 else TeeSink(every) if every else NullSink()
    return RouteOutputs(sink=sink, exports=exports, owned=[*sinks, *exports])  # in the order outputs are named


def _target(path: Path, kind: OutputKind, source: Source) -> Path:
    """Where an output is written: its path, except that a live recording never replaces an existing file."""
    if source.live and kind in (OutputKind.VIDEO, OutputKind.JSON):
        free = free_path(path)
        if free != path:
            log.warning("%s exists: recording into %s", path, free)
        return free
    return path


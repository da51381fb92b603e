"""``streamseg``: the command line. Turns argv into a :class:`RunConfig` and runs it.

Exit codes: 0 done (also after Ctrl-C or SIGTERM, once the output is closed),
1 a failure while running, 2 bad input (missing or corrupt file, unknown model,
absent camera, unwritable output, bad flags).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import (DEFAULT_MODEL, DropPolicy, DType, Engine, ModelConfig, RenderConfig, RunConfig, Style, Task,
                     parse_seconds)
from .errors import InputError, OutputError, SourceError, StreamsegError
from .resources import close_all, safe_name

log = logging.getLogger("streamseg")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _seconds(text: str) -> float:
    try:
        value = parse_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: use e.g. 90, 90s, 10m, 1.5h or 1:30") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: expected more than 0")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamseg",
        description="Segment a video, image, folder, stream or camera with a Hugging Face model, live.",
        epilog="exit codes: 0 done (also when stopped by Ctrl-C/SIGTERM), 1 failure while running, 2 bad input")
    p.add_argument("input", nargs="*", help="video file, image, folder of images, or stream URL "
                                            "(rtsp://, rtmp://, http(s)://, tcp://, udp://, srt://); several inputs "
                                            "are segmented together (one batched forward), each into its own output")
    p.add_argument("-o", "--output", type=Path, help="annotated output: .mp4/.mov/.mkv video, .png/.jpg image, "
                                                     "or a folder (one PNG per frame); with several inputs, a folder "
                                                     "(DIR/NAME.mp4 each) or a pattern with {name} and/or {index}")
    p.add_argument("--camera", type=int, metavar="N", help="read local camera N instead of INPUT")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face model id or local folder (default: %(default)s)")
    p.add_argument("--task", default="auto", choices=[t.value for t in Task],
                   help="auto (what the model supports, panoptic first), semantic, instance or panoptic")
    p.add_argument("--threshold", type=float, default=0.9, help="instance/panoptic: minimum segment score (default 0.9)")
    p.add_argument("--mask-threshold", type=float, default=0.5,
                   help="instance/panoptic: mask probability for a pixel to belong to a segment (default 0.5)")
    p.add_argument("--overlap-threshold", type=float, default=0.5,
                   help="instance/panoptic: drop a segment when less than this share of its mask is its own (default 0.5)")
    p.add_argument("--smooth", type=float, default=0.0, metavar="S",
                   help="semantic: temporal smoothing 0..1 (moving average of class probabilities; 0 = off)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model: the first batch takes long (about 40 s for SegFormer-B0 on 2 CPU "
                        "cores), later ones run faster; semantic models")
    p.add_argument("--engine", default="torch", choices=[e.value for e in Engine],
                   help="what runs the forward of semantic models: torch (default) or onnxruntime (exported to ONNX "
                        "once and cached; faster on CPUs; needs pip install 'streamseg[onnx]'; falls back to torch)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", default="auto", choices=[d.value for d in DType],
                   help="model precision (auto: float16 on CUDA, float32 on CPU)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="frames per forward (default: 4)")
    p.add_argument("--drop-policy", choices=[d.value for d in DropPolicy],
                   help="when inference falls behind: wait (lossless; default for files) or drop-oldest "
                        "(default for cameras and streams)")
    p.add_argument("--alpha", type=float, default=0.4, help="mask opacity, 0..1 (default: 0.4)")
    p.add_argument("--style", default="fill", choices=[st.value for st in Style],
                   help="fill (default), contour, fill+contour, side-by-side, mask, blur-background, replace-background")
    p.add_argument("--keep", type=_names, default=(), metavar="CLASSES",
                   help="blur-/replace-background: classes to leave as they are, comma-separated (e.g. person)")
    p.add_argument("--background", default="#00b140", metavar="COLOUR_OR_IMAGE",
                   help="replace-background: #RRGGBB or an image file (default: #00b140, chroma green)")
    p.add_argument("--classes", type=_names, default=(), metavar="CLASSES",
                   help="draw only these classes (names or ids, comma-separated)")
    p.add_argument("--exclude", type=_names, default=(), metavar="CLASSES", help="never draw these classes")
    p.add_argument("--labels", action="store_true", help="write each segment's label on it")
    p.add_argument("--legend", action="store_true", help="draw the classes visible in each frame")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="write JSON Lines: one record per frame with its segments (id, label, score, area, bbox)")
    p.add_argument("--json-masks", action="store_true", help="add each segment's mask to --json as COCO RLE")
    p.add_argument("--masks", type=Path, metavar="DIR",
                   help="write one indexed PNG per frame holding the class (or segment) id of every pixel")
    p.add_argument("--show-fps", action="store_true", help="draw the frame rate")
    display = p.add_mutually_exclusive_group()
    display.add_argument("--no-display", action="store_true", help="never open a window (headless)")
    display.add_argument("--display", action="store_true", help="open a window also when writing -o")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="network open/read timeout (default: 10)")
    p.add_argument("--serve", metavar="[HOST:]PORT",
                   help="browser live view: a page, /stream.mjpg and /stats on 127.0.0.1:PORT (0: any free port); "
                        "another HOST needs --serve-token")
    p.add_argument("--serve-token", metavar="SECRET",
                   help="--serve: every request must carry ?token=SECRET (or Authorization: Bearer SECRET)")
    p.add_argument("--duration", type=_seconds, metavar="TIME",
                   help="stop after this much input (90, 90s, 10m, 1h, 1:30); for live sources, wall-clock time")
    p.add_argument("--segment-time", type=_seconds, metavar="TIME",
                   help="rotate the output video every TIME (e.g. 10m): rec.mp4 -> rec-000.mp4, rec-001.mp4...; "
                        "a name with %%-codes is a strftime pattern of each file's start (rec-%%Y%%m%%d-%%H%%M%%S.mp4)")
    p.add_argument("--reconnect", type=int, metavar="N",
                   help="live streams: reconnect attempts in a row when the stream fails or ends "
                        "(default: keep trying; 0: stop at the first end)")
    p.add_argument("--reconnect-max-delay", type=_seconds, default=30.0, metavar="TIME",
                   help="live streams: longest wait between reconnect attempts (backoff doubles from 0.5 s; default 30 s)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that run their own code")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("--debug", action="store_true", help="log everything and show tracebacks")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _configure_logging(verbose: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="streamseg: %(levelname)s: %(message)s", stream=sys.stderr)
    if not debug:  # their retries and notices are not the user's business unless debugging
        for noisy in ("huggingface_hub", "transformers", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        try:
            import cv2

            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # e.g. V4L probing an absent camera
        except (ImportError, AttributeError):  # pragma: no cover - a dependency
            pass
        try:
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - a dependency
            pass


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if args.camera is None and not args.input:
        raise InputError("give an INPUT (file, folder, URL) or --camera N")
    if args.camera is not None and args.input:
        raise InputError("give either INPUT or --camera N, not both")
    inputs = tuple(args.input) if args.input else (f"camera:{args.camera}",)
    live_window = args.camera is not None
    display = args.display or (not args.no_display and ((args.output is None and args.serve is None) or live_window))
    return RunConfig(
        source=inputs[0],
        more_sources=inputs[1:],
        output=args.output,
        display=display,
        model=ModelConfig(name=args.model, device=args.device, dtype=DType(args.dtype),
                          trust_remote_code=args.trust_remote_code, task=Task(args.task), threshold=args.threshold,
                          mask_threshold=args.mask_threshold, overlap_threshold=args.overlap_threshold,
                          smooth=args.smooth, compile=args.compile,
                          engine=Engine(args.engine)),
        render=RenderConfig(alpha=args.alpha, legend=args.legend, show_fps=args.show_fps, style=Style(args.style),
                            labels=args.labels, classes=args.classes, exclude=args.exclude, keep=args.keep,
                            background=args.background),
        json_path=args.json,
        json_masks=args.json_masks,
        masks_dir=args.masks,
        duration=args.duration,
        segment_time=args.segment_time,
        reconnect=args.reconnect,
        reconnect_max_delay=args.reconnect_max_delay,
        timeout=args.timeout,
        serve=args.serve,
        serve_token=args.serve_token,
        batch_size=args.batch_size,
        drop_policy=DropPolicy(args.drop_policy) if args.drop_policy else None,
        progress=not args.quiet,
    )


def _camera_index(source: str) -> int | None:
    return int(source.split(":", 1)[1]) if source.startswith("camera:") else None


def _open_outputs(config: RunConfig, source, renderer, *, on_quit) -> tuple:
    """The sink (file, window, both, or nothing) and the exports; all closed again if one fails to open."""
    from .exports import JsonLinesExport, MaskPngExport
    from .sinks import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageSink, NullSink, SegmentedVideoSink, TeeSink, VideoFileSink,
                        WindowSink)

    out = config.output
    sinks: list = []
    exports: list = []
    try:
        if config.json_path is not None:
            exports.append(JsonLinesExport(config.json_path, masks=config.json_masks))
        if config.masks_dir is not None:
            exports.append(MaskPngExport(config.masks_dir, renderer.colours))
        if out is not None:
            if config.segment_time is not None:
                sinks.append(SegmentedVideoSink(out, config.segment_time, fps=source.fps, live=source.live))
            elif out.suffix.lower() in VIDEO_SUFFIXES:
                sinks.append(VideoFileSink(out, audio_from=source.audio_path, fps=source.fps, live=source.live))
            else:
                sinks.append(ImageSink(out, folder=out.suffix.lower() not in IMAGE_SUFFIXES))
        if config.serve is not None:
            from .serve import PreviewServer

            sinks.append(PreviewServer(config.serve, token=config.serve_token))
        if config.display:
            sinks.append(WindowSink(f"streamseg - {source.description}", on_quit=on_quit))
    except BaseException:
        close_all([*exports, *sinks])
        raise
    sink = sinks[0] if len(sinks) == 1 else TeeSink(sinks) if sinks else NullSink()
    return sink, exports


@contextlib.contextmanager
def _signals_stop(pipeline):
    """SIGINT and SIGTERM: the first finishes the frames in flight, a second stops now."""
    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if pipeline.stop_event.is_set():
            log.warning("second %s: stopping now", name)
            pipeline.abort()
        else:
            log.warning("%s: finishing the frames in flight (send it again to stop now)", name)
            pipeline.request_stop()

    signalled: list[int] = []

    def on_signal_recorded(signum: int, frame: object) -> None:
        signalled.append(signum)
        on_signal(signum, frame)

    previous = {sig: signal.signal(sig, on_signal_recorded) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signalled:  # stopping because of a signal: one more while closing down changes nothing.
                # SIG_IGN, not a Python handler: the interpreter resets Python handlers to the default
                # (die) while it shuts down, which would turn a late second Ctrl-C into exit code -2.
                signal.signal(sig, signal.SIG_IGN)
            else:
                signal.signal(sig, handler)


def run(config: RunConfig, *, install_signal_handlers: bool = False) -> int:
    """Open the source, load the model, open the outputs, and run the pipeline."""
    from .model import Segmenter
    from .pipeline import Pipeline
    from .render import Renderer
    from .sinks import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from .sources import ImageSource, is_url, open_source

    out = config.output
    if out is not None:
        suffix = out.suffix.lower()
        if suffix and suffix not in VIDEO_SUFFIXES | IMAGE_SUFFIXES and not out.is_dir():
            raise OutputError(f"unsupported output {out}: use a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                              f"an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a folder")
        parent = out.resolve().parent
        if not parent.is_dir():
            raise OutputError(f"output folder does not exist: {parent} (for {out})")

    # A network stream is opened after the model loads, so that no backlog builds up meanwhile;
    # anything else is opened first, so that a bad path fails before a slow model load.
    segmenter = Segmenter.load(config.model) if is_url(config.source) else None
    with open_source(config.source, camera=_camera_index(config.source), timeout=config.timeout,
                     reconnect=config.reconnect, reconnect_max_delay=config.reconnect_max_delay) as source:
        single_still = isinstance(source, ImageSource) and not source.is_folder
        if out is not None and out.suffix.lower() in IMAGE_SUFFIXES and not single_still:
            raise OutputError(f"{out} holds one image, but {source.description} has many frames; "
                              "write to a video (.mp4) or a folder")
        segmenter = segmenter or Segmenter.load(config.model)
        renderer = Renderer(config.render, segmenter.id2label, segmenter.num_labels)

        pipeline_ref: list = []

        def stop() -> None:
            if pipeline_ref:
                pipeline_ref[0].request_stop()

        sink, exports = _open_outputs(config, source, renderer, on_quit=stop)
        bar = None
        if config.progress and not source.live:
            from tqdm import tqdm

            bar = tqdm(total=source.expected_frames, unit="frame", dynamic_ncols=True, mininterval=0.5,
                       desc="streamseg", file=sys.stderr)

        def on_frame(stats) -> None:
            bar.update(1)

        still_results: list = []
        pipeline = Pipeline(source, segmenter, renderer, sink, batch_size=config.batch_size,
                            channel_size=config.channel_size, drop_policy=config.drop_policy,
                            on_frame=on_frame if bar is not None else None,
                            on_result=still_results.append if single_still else None, exports=exports,
                            duration=config.duration)
        pipeline_ref.append(pipeline)
        from .serve import PreviewServer

        for s in getattr(sink, "sinks", [sink]):
            if isinstance(s, PreviewServer):  # the live view's /stats
                s.stats = pipeline.snapshot
        try:
            with _signals_stop(pipeline) if install_signal_handlers else contextlib.nullcontext():
                stats = pipeline.run()
        finally:
            if bar is not None:
                bar.close()
    for result in still_results:  # as the seed example prints for one image
        print("Segmented parts:")
        for seg in result.segments():
            if not renderer.shows(seg.label_id):
                continue
            score = "N/A" if seg.score is None else f"{seg.score:.3f}"
            print(f"\u2022 {seg.label} (score: {score})")
    stopped = "" if stats.completed else " (stopped early)"
    print(f"streamseg: {stats.summary()}{stopped}", file=sys.stderr)
    files = next((s.files for s in getattr(sink, "sinks", [sink]) if getattr(s, "files", None)), None)
    if files:
        print(f"streamseg: wrote {len(files)} files: {', '.join(str(f) for f in files)}", file=sys.stderr)
    elif out is not None:
        print(f"streamseg: wrote {out}", file=sys.stderr)
    return EXIT_OK


def source_name(spec: str) -> str:
    """A file-name-safe name for a source: the file's stem, ``camera-0``, or the URL's host, port and path."""
    from urllib.parse import urlparse

    from .sources import is_url

    if spec.startswith("camera:"):
        return "camera-" + spec.split(":", 1)[1]
    if is_url(spec):
        u = urlparse(spec)
        text = f"{u.hostname or 'stream'}{'-' + str(u.port) if u.port else ''}{u.path}"
    else:
        text = Path(spec).stem or Path(spec).name
    return safe_name(text, "source")


def output_paths(output: Path | None, specs: Sequence[str]) -> list[Path | None]:
    """Where each of several sources goes: ``DIR/NAME.mp4``, or a pattern's ``{name}``/``{index}`` filled in.

    Names that repeat get ``-1``, ``-2``... so that two inputs never write the same file.
    """
    if output is None:
        return [None] * len(specs)
    names: list[str] = []
    for spec in specs:
        name = source_name(spec)
        base, k = name, 1
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    text = str(output)
    if "{" in text:
        try:
            paths = [Path(text.format(name=n, index=i)) for i, n in enumerate(names)]
        except (KeyError, IndexError, ValueError) as exc:
            raise OutputError(f"invalid output pattern {text!r}: use {{name}} and/or {{index}}") from exc
        if len(set(paths)) < len(paths):
            raise OutputError(f"output pattern {text!r} gives several inputs the same file: add {{name}} or {{index}}")
        return paths
    from .sinks import VIDEO_SUFFIXES

    if output.suffix.lower() in VIDEO_SUFFIXES:
        raise OutputError(f"{len(specs)} inputs cannot share one file {output}: give a folder, or a pattern "
                          "such as out/{name}.mp4")
    if output.exists() and not output.is_dir():
        raise OutputError(f"output exists and is not a folder: {output}")
    if not output.resolve().parent.is_dir():
        raise OutputError(f"output folder does not exist: {output.resolve().parent} (for {output})")
    output.mkdir(exist_ok=True)
    return [output / f"{n}.mp4" for n in names]


def run_many(config: RunConfig, *, install_signal_handlers: bool = False) -> int:
    """Several sources, each with its own capture thread and output, batched together into one forward.

    A source that cannot be opened or fails while running is reported and the others go on;
    the exit code is then 1.
    """
    from .model import Segmenter
    from .pipeline import Pipeline, Route
    from .render import Renderer
    from .serve import PreviewServer
    from .sinks import NullSink, TeeSink
    from .sources import open_source

    specs = (config.source, *config.more_sources)
    outputs = output_paths(config.output, specs)
    if config.masks_dir is not None and config.masks_dir.resolve().parent.is_dir():
        config.masks_dir.mkdir(exist_ok=True)  # one folder of masks per source inside it
    segmenter = Segmenter.load(config.model)  # first: network streams opened after it build no backlog
    failed: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        server = None
        if config.serve is not None:
            server = stack.enter_context(PreviewServer(config.serve, token=config.serve_token, sources=len(specs)))
        routes, names = [], []
        pipeline_ref: list = []

        def stop() -> None:
            if pipeline_ref:
                pipeline_ref[0].request_stop()

        for spec, out in zip(specs, outputs):
            try:
                source = stack.enter_context(open_source(spec, camera=_camera_index(spec), timeout=config.timeout,
                                                         reconnect=config.reconnect,
                                                         reconnect_max_delay=config.reconnect_max_delay))
            except SourceError as exc:
                failed[spec] = str(exc)
                print(f"streamseg: error: {exc}", file=sys.stderr)
                continue
            name = out.stem if out is not None else source_name(spec)
            renderer = Renderer(config.render, segmenter.id2label, segmenter.num_labels)
            one = dataclasses.replace(config, output=out, serve=None,
                                      json_path=_per_source(config.json_path, name),
                                      masks_dir=None if config.masks_dir is None else config.masks_dir / name)
            sink, exports = _open_outputs(one, source, renderer, on_quit=stop)
            stack.callback(close_all, [*exports, sink])  # also when the run never starts; close() is idempotent
            if server is not None:
                sink = TeeSink([server] if isinstance(sink, NullSink) else [sink, server])
            routes.append(Route(source, renderer, sink, exports))
            names.append(name)
        if not routes:
            raise SourceError(f"none of the {len(specs)} inputs could be opened")
        pipeline = Pipeline.multi(routes, segmenter, batch_size=config.batch_size, channel_size=config.channel_size,
                                  drop_policy=config.drop_policy, duration=config.duration)
        pipeline_ref.append(pipeline)
        if server is not None:
            server.stats = pipeline.snapshot
        with _signals_stop(pipeline) if install_signal_handlers else contextlib.nullcontext():
            stats = pipeline.run()
    for name, route in zip(names, routes):
        state = f" (failed: {route.error})" if route.error else "" if route.stats.completed else " (stopped early)"
        print(f"streamseg: [{name}] {route.stats.summary()}{state}", file=sys.stderr)
    print(f"streamseg: all {len(specs)} sources: {stats.summary()}", file=sys.stderr)
    written = [str(o) for o, r in zip(outputs, routes) if o is not None and r.stats.frames_written]
    if written:
        print(f"streamseg: wrote {', '.join(written)}", file=sys.stderr)
    return EXIT_FAILURE if failed or any(r.error for r in routes) else EXIT_OK


def _per_source(path: Path | None, name: str) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}-{name}{path.suffix}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # streamseg bench ...: the side-by-side benchmark
        from .bench import main as bench_main

        _configure_logging(False, False)
        return bench_main(argv[1:])
    if argv[:1] == ["batch"]:  # streamseg batch ...: many videos on Ray
        from .batch import main as batch_main

        _configure_logging(False, False)
        return batch_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.debug)
    try:
        config = config_from_args(args)
        if config.more_sources:
            return run_many(config, install_signal_handlers=True)
        return run(config, install_signal_handlers=True)
    except StreamsegError as exc:
        if args.debug:
            log.exception("failed")
        print(f"streamseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streamseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # anything unexpected: one line, the traceback only with --debug
        if args.debug:
            log.exception("failed")
        print(f"streamseg: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              f"{'' if args.debug else ' (run with --debug for details)'}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

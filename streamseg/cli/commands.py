"""``streamseg``: the command line. Turns argv into frozen configs (:mod:`streamseg.cli.parser`), sets up
logging and signals, runs (:mod:`streamseg.app`), prints what happened and maps it to an exit code.

Exit codes: 0 done (also after Ctrl-C or SIGTERM, once the output is closed),
1 a failure while running, 2 bad input (missing or corrupt file, unknown model,
absent camera, unwritable output, bad flags), 130 interrupted before the run started.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from streamseg.errors import InputError, StreamsegError, describe

from .configs import batch_config, fleet_config, model_config, run_config
from .parser import parse

log = logging.getLogger("streamseg")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        try:  # their own handlers and levels are set when they are imported: quiet them after that
            import transformers
            from huggingface_hub.utils import logging as hub_logging

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
            hub_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover - a dependency
            pass


@contextlib.contextmanager
def _quiet_ray(debug: bool, *, data: bool = False):
    """Ray's own output stays out of the user's terminal unless debugging: its Python loggers are silenced, its
    C++ log level is set for the processes it starts (they read it from the environment they inherit), and what
    is still written to this process's stderr below Python (the C++ core's lines, with raw colour codes) and the
    raylet's error paragraphs Ray prints on the driver go to ``ray/streamseg-PID.log`` in the temp folder, beside
    Ray's own logs. streamseg's lines (logging, ``_say``, progress) still reach the terminal."""
    if debug:
        yield
        return
    import io
    import tempfile

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if data:  # Ray Data sets up its own loggers when imported (a console handler at INFO): quieted after that
        try:
            import ray.data  # noqa: F401
        except ImportError:
            pass
    for name in ("ray", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    for handler in logging.getLogger("ray.data").handlers:  # its file handler writes Ray's log folder: kept
        if "File" not in type(handler).__name__:
            handler.setLevel(logging.CRITICAL + 1)
    folder = Path(tempfile.gettempdir()) / "ray"
    try:
        folder.mkdir(exist_ok=True)
        sink = open(folder / f"streamseg-{os.getpid()}.log", "ab", buffering=0)  # noqa: SIM115 - closed below
    except OSError:  # nowhere to put them: the loggers are quiet at least
        yield
        return
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    terminal = io.TextIOWrapper(os.fdopen(terminal_fd, "wb", buffering=0), encoding=sys.stderr.encoding or "utf-8",
                                errors="backslashreplace", line_buffering=True, write_through=True)
    old_stderr = sys.stderr
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old_stderr]
    os.dup2(sink.fileno(), 2)  # fd 2: Ray's C++ core here, and the processes Ray starts from here
    sys.stderr = terminal
    for h in handlers:
        h.setStream(terminal)
    restore = _divert_ray_prints(sink)
    try:
        yield
    finally:
        restore()
        for h in handlers:
            h.setStream(old_stderr)
        sys.stderr = old_stderr
        terminal.flush()
        os.dup2(terminal_fd, 2)
        terminal.close()
        sink.close()


def _divert_ray_prints(sink) -> Callable[[], None]:
    """Ray's driver prints the errors its raylets publish ("A worker died or was killed ...", in colour) straight to
    sys.stdout and sys.stderr: into ``sink`` instead. Returns the undo. Ray's private API: if it moved, nothing
    is diverted."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:
        return lambda: None
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:
        return lambda: None

    def to_sink(data, ignore_prefix: bool = False) -> None:
        try:
            sink.write(("".join(f"({data.get('pid', 'ray')}) {line}\n" for line in data.get("lines", []))).encode())
        except (OSError, ValueError):
            pass

    ray_worker.print_to_stdstream = to_sink
    return lambda: setattr(ray_worker, "print_to_stdstream", original)


def _say(text: str) -> None:
    print(f"streamseg: {text}", file=sys.stderr)


@contextlib.contextmanager
def _signals_stop(run):
    """SIGINT and SIGTERM: the first finishes the frames in flight, a second stops now."""
    signalled: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # Counted first, acted on, then said: a second signal can interrupt this handler (Python runs it nested,
        # between two bytecodes), and it must find the first one already counted and its stop requested.
        signalled.append(signum)
        name = signal.Signals(signum).name
        if len(signalled) > 1 or run.stopping:
            run.abort()
            log.warning("second %s: stopping now", name)
        else:
            run.request_stop()
            log.warning("%s: finishing the frames in flight (send it again to stop now)", name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
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


# -- streamseg [run] ---------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from streamseg.app import Run

    config = run_config(args)
    with Run(config, on_source_error=lambda spec, exc: _say(f"error: {exc}"), require_output=True) as run:
        run.open()
        if run.server is not None:  # a token is shown once, and only one streamseg made up
            _say(f"live view: {run.server.url}{f'?token={run.server.token}' if run.server.token_generated else ''}")
        bar = None
        if not args.quiet and not run.live:
            from tqdm import tqdm

            bar = tqdm(total=run.expected_frames, unit="frame", dynamic_ncols=True, mininterval=0.5,
                       desc="streamseg", file=sys.stderr)
        try:
            with _signals_stop(run):
                report = run.run(on_frame=None if bar is None else (lambda stats: bar.update(1)))
        except BaseException:
            if kept := run.written():  # nothing already processed is lost: say where it is
                _say(f"kept what was written before the error: {_listing(kept)}")
            raise
        finally:
            if bar is not None:
                bar.close()
    _print_report(report)
    return EXIT_FAILURE if report.failed else EXIT_OK


def _stdout(text: str) -> None:
    """Print to stdout; a reader that went away (``| head -1``) does not fail the run."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # also for the interpreter's last flush at exit
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _print_report(report) -> None:
    for source in report.sources:
        if source.parts is not None:  # a single still: as the seed example prints for one image
            _stdout("Segmented parts:")
            for seg in source.parts:
                score = "N/A" if seg.score is None else f"{seg.score:.3f}"
                _stdout(f"\u2022 {seg.label} (score: {score})")
    if len(report.sources) == 1:
        (source,) = report.sources
        _say(f"{source.stats.summary()}{'' if source.stats.completed else ' (stopped early)'}; {report.threads}")
    else:
        for source in report.sources:
            if source.stats is None:
                state, summary = f"not opened: {source.error}", ""
            else:
                summary = source.stats.summary()
                state = (f" (failed: {source.error})" if source.error else
                         "" if source.stats.completed else " (stopped early)")
            _say(f"[{source.name}] {summary}{state}")
        _say(f"all {len(report.sources)} sources: {report.total.summary()}; {report.threads}")
    if report.written:
        _say(f"wrote {_listing(report.written)}")


def _listing(written) -> str:
    """``out.mp4``, ``3 files: a.mp4, b.mp4, c.mp4``, ``12 files: seg.jsonl, masks/ (11 files)``."""
    files = [f for w in written for f in w.files]
    parts = []
    for w in written:
        if w.files == (w.path,):
            parts.append(str(w.path))
        elif len(w.files) > 1 and all(f.parent == w.path for f in w.files):  # a folder output
            parts.append(f"{w.path}{os.sep} ({len(w.files)} files)")
        else:
            parts.extend(str(f) for f in w.files)
    return parts[0] if len(files) == 1 else f"{len(files)} files: {', '.join(parts)}"


# -- streamseg batch --------------------------------------------------------------------------
def _batch(args: argparse.Namespace) -> int:
    from streamseg.cluster.batch import MANIFEST, run_batch

    config = batch_config(args)
    try:
        with _quiet_ray(args.debug, data=True):
            counts = run_batch(config, progress=not args.quiet)
    except KeyboardInterrupt:
        _say("interrupted; rerun the same command to finish the rest")
        return EXIT_INTERRUPTED
    _say(f"{counts['inputs']} inputs: {counts['done']} done, {counts['failed']} failed, "
         f"{counts['skipped']} skipped (already complete), {counts['frames']} frames; "
         f"manifest: {args.output / MANIFEST}")
    return EXIT_FAILURE if counts["failed"] else EXIT_OK


# -- streamseg fleet --------------------------------------------------------------------------
def _fleet(args: argparse.Namespace) -> int:
    from streamseg.cluster.fleet import Fleet, fleet_summary

    config = fleet_config(args)
    with _quiet_ray(args.debug), Fleet(config, on_event=_say) as fleet:
        fleet.open()
        if fleet.view is not None:  # a token is shown once, and only one streamseg made up
            view = fleet.view
            _say(f"dashboard: {view.url}{f'?token={view.token}' if view.token_generated else ''}")
        count = len(fleet.sources)
        _say(f"{count} source{'s' if count != 1 else ''} on {config.workers} "
             f"worker{'s' if config.workers != 1 else ''}; recording into {config.outdir}")
        with _signals_stop(fleet):
            report = fleet.run()
    for line in fleet_summary(report):
        _say(line)
    return EXIT_FAILURE if report.failed else EXIT_OK


# -- streamseg bench --------------------------------------------------------------------------
def _bench(args: argparse.Namespace) -> int:
    bench = _benchmarks_module()
    model = model_config(args, name=args.model or "generated: SegFormer-B0, random weights")
    results = bench.run_benchmark(model=model, generate_model=args.model is None, video=args.video,
                                  frames=args.frames, naive_frames=args.naive_frames, batch_size=args.batch_size,
                                  repeats=args.repeats, out_dir=args.out, loaded_rows=not args.no_loaded,
                                  engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()))
    print(bench.format_table(results))
    if "written_to" in results:
        print(f"results: {results['written_to']}")
    return EXIT_OK


def _benchmarks_module():
    """``benchmarks.bench`` from a source checkout (the folder beside the package, or the current one)."""
    from pathlib import Path

    try:
        from benchmarks import bench
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if not (root / "benchmarks" / "bench.py").is_file():
            raise InputError("streamseg bench runs from a source checkout (it needs the benchmarks/ folder): "
                             "run it from the repository, or python -m benchmarks there") from None
        sys.path.insert(0, str(root))
        from benchmarks import bench
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version (0) or a bad flag (2, its one line already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    _configure_logging(args.verbose, args.debug)
    handler = {"run": _run, "batch": _batch, "fleet": _fleet, "bench": _bench}[args.command]
    try:
        return handler(args)
    except StreamsegError as exc:
        if args.debug:
            log.exception("failed")
        _say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # anything unexpected: one line, the traceback only with --debug
        if args.debug:
            log.exception("failed")
        _say(f"error: {describe(exc)}"
             f"{'' if args.debug else ' (run with --debug for details)'}")
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

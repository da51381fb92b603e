"""The command line's vocabulary: one parser with subcommands and shared argument groups (read back into frozen
configs by :mod:`streamseg.cli.configs`).

Every subcommand takes the flags of a group the same way, because each group is added by one
function here and read back by one function there:

=================  ==========================================  =======================
group              flags                                       config
=================  ==========================================  =======================
model              --model --task --device --dtype ...         :class:`ModelConfig`
render             --style --alpha --keep --legend ...         :class:`RenderConfig`
input              --timeout --reconnect --duration ...        :class:`InputConfig`
outputs            -o --json --masks --serve --display ...     :class:`OutputConfig`
=================  ==========================================  =======================

Nothing here opens a file or loads a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamseg import __version__
from streamseg.config import DEFAULT_MODEL, Blend, DropPolicy, DType, Encoder, Engine, MasksBy, Style, Task, parse_seconds

COMMANDS = ("run", "batch", "fleet", "bench")
_COMMANDS_HELP = """commands:
  streamseg [run] INPUT...   segment files, images, folders, streams or cameras (the default command)
  streamseg batch INPUTS...  annotate many videos on Ray, resumably (streamseg batch --help)
  streamseg fleet SOURCES... record live sources on a fleet of Ray workers (streamseg fleet --help)
  streamseg bench            time every stage side by side (streamseg bench --help)

exit codes: 0 done (also when stopped by Ctrl-C/SIGTERM), 1 failure while running, 2 bad input"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``streamseg: error: ...``, exit 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"streamseg: error: {message} (see {self.prog.split(' [')[0]} --help)\n")


def _seconds(text: str) -> float:
    try:
        value = parse_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: use e.g. 90, 90s, 10m, 1.5h or 1:30") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: expected more than 0")
    return value


def _threads(text: str) -> str | int:
    if text in ("auto", "library"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --threads {text!r}: expected a number, auto or library") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid --threads {value}: expected 1 or more, auto or library")
    return value


def _size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text.lower():
            width, height = (int(v) for v in text.lower().split("x"))
            return width, height
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --size {text!r}: expected S (e.g. 384) or WxH (e.g. 640x384)") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


# -- the groups --------------------------------------------------------------------------------
def add_model_args(p: argparse.ArgumentParser, *, default_model: str | None = DEFAULT_MODEL,
                   default_batch: int = 4) -> None:
    g = p.add_argument_group("model")
    model_help = ("Hugging Face model id or local folder" +
                  (" (default: %(default)s)" if default_model else
                   " (default: SegFormer-B0's architecture with random weights)"))
    g.add_argument("--model", default=default_model, metavar="ID_OR_FOLDER", help=model_help)
    g.add_argument("--task", default="auto", choices=[t.value for t in Task],
                   help="auto (what the model supports, panoptic first), semantic, instance or panoptic")
    g.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--dtype", default="auto", choices=[d.value for d in DType],
                   help="model precision (auto: float16 on CUDA, float32 on CPU)")
    g.add_argument("--batch-size", type=int, default=default_batch, metavar="N",
                   help="frames per forward (default: %(default)s)")
    g.add_argument("--threshold", type=float, default=0.9, metavar="T", help="instance/panoptic: minimum segment score (default 0.9)")
    g.add_argument("--mask-threshold", type=float, default=0.5, metavar="T",
                   help="instance/panoptic: mask probability for a pixel to belong to a segment (default 0.5)")
    g.add_argument("--overlap-threshold", type=float, default=0.5, metavar="T",
                   help="instance/panoptic: drop a segment when less than this share of its mask is its own (default 0.5)")
    g.add_argument("--smooth", type=float, default=0.0, metavar="S",
                   help="semantic: temporal smoothing 0..1 (moving average of class probabilities; 0 = off)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model: the first batch takes long (about 40 s for SegFormer-B0 on 2 CPU "
                        "cores), later ones run faster; semantic models")
    g.add_argument("--engine", default="auto", choices=[e.value for e in Engine],
                   help="what runs the forward of semantic models: auto (default: openvino on the CPU, torch on "
                        "CUDA, with --compile and for instance/panoptic models), torch, openvino (converted once "
                        "and cached; bf16 with --dtype auto where the CPU has native bf16), or onnxruntime "
                        "(exported to ONNX once and cached; pip install 'streamseg[onnx]'); the compiled engines "
                        "fall back to torch with a warning")
    g.add_argument("--size", type=_size, metavar="S|WxH",
                   help="inference resolution instead of the model's own: S scales the shortest edge to S "
                        "(aspect kept), WxH resizes to exactly that (for fixed-size models); labels and output "
                        "stay at the source's size")
    g.add_argument("--infer-every", type=int, default=1, metavar="N",
                   help="run the model on every Nth frame of each source; the frames between reuse its labels "
                        "(every frame is still drawn and written; default 1)")
    g.add_argument("--track-buffer", type=int, default=30, metavar="N",
                   help="instance/panoptic: frames an object may go unseen and keep its track id (default 30)")
    g.add_argument("--prompt", metavar="TEXTS",
                   help="what to segment, in words, with a model that takes text (CLIPSeg: --model "
                        "CIDAS/clipseg-rd64-refined): \"person, red car\", each text a class")
    g.add_argument("--prompt-threshold", type=float, default=0.5, metavar="P",
                   help="--prompt: a pixel takes its most probable text when that probability is at least P "
                        "(default 0.5), else no segment")
    g.add_argument("--point", action="append", default=[], metavar="X,Y",
                   help="track the object at source pixel X,Y from each source's first frame (repeatable), with a "
                        "SAM 2 video model (--model facebook/sam2.1-hiera-tiny, EdgeTAM); --serve adds clicks")
    g.add_argument("--trust-remote-code", action="store_true", help="allow models that run their own code")
    g.add_argument("--threads", type=_threads, default="auto", metavar="N|auto|library",
                   help="the forward's torch threads (auto: every core this process may use, or half of them when "
                        "that is faster while the run goes, e.g. beside a busy process; N: exactly N; library: each "
                        "library's own defaults)")


def add_render_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("drawing")
    g.add_argument("--style", default="fill", choices=[st.value for st in Style],
                   help="fill (default), contour, fill+contour, side-by-side, mask, blur-background, replace-background")
    g.add_argument("--alpha", type=float, default=0.4, metavar="A", help="mask opacity, 0..1 (default: 0.4)")
    g.add_argument("--keep", type=_names, default=(), metavar="CLASSES",
                   help="blur-/replace-background: classes to leave as they are, comma-separated (e.g. person)")
    g.add_argument("--background", default="#00b140", metavar="COLOUR_OR_IMAGE",
                   help="replace-background: #RRGGBB or an image file (default: #00b140, chroma green)")
    g.add_argument("--classes", type=_names, default=(), metavar="CLASSES",
                   help="draw only these classes (names or ids, comma-separated)")
    g.add_argument("--exclude", type=_names, default=(), metavar="CLASSES", help="never draw these classes")
    g.add_argument("--labels", action="store_true", help="write each segment's label on it")
    g.add_argument("--legend", action="store_true", help="draw the classes visible in each frame")
    g.add_argument("--show-fps", action="store_true", help="draw the frame rate")
    g.add_argument("--blend", choices=[b.value for b in Blend], default=Blend.AUTO.value,
                   help="where fill, mask, blur- and replace-background are drawn for semantic models: on the "
                        "model's device, where the frames and labels already are, or on the host with OpenCV "
                        "(auto: the device on a GPU, the host on the CPU)")


def add_input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument("input", nargs="*", help="video file, image, folder of images, stream URL (rtsp://, rtmp://, "
                                            "http(s)://, tcp://, udp://, srt://) or camera:N; several inputs are "
                                            "segmented together (one batched forward), each into its own output")
    g.add_argument("--camera", type=int, metavar="N", help="read local camera N (a live window unless --no-display)")
    add_reading_args(g)


def add_reading_args(g) -> None:
    """How sources are read (``run`` and ``fleet``): timeouts, reconnects, duration, latency, drop policy."""
    g.add_argument("--timeout", type=float, default=10.0, metavar="S", help="network timeout: opening and reading a stream, and a published stream's connecting "
                        "or going without sending (then it is reconnected; default: 10)")
    g.add_argument("--duration", type=_seconds, metavar="TIME",
                   help="stop after this much input (90, 90s, 10m, 1h, 1:30); for live sources, wall-clock time")
    g.add_argument("--reconnect", type=int, metavar="N",
                   help="live streams: reconnect attempts in a row when the stream fails or ends "
                        "(default: keep trying; 0: stop at the first end)")
    g.add_argument("--reconnect-max-delay", type=_seconds, default=30.0, metavar="TIME",
                   help="live streams: longest wait between reconnect attempts (backoff doubles from 0.5 s; default 30 s)")
    g.add_argument("--max-latency", type=_seconds, default=1.0, metavar="TIME",
                   help="live sources: the capture-to-output latency to keep under; the batch grows only while "
                        "it holds (default 1 s)")
    g.add_argument("--drop-policy", choices=[d.value for d in DropPolicy],
                   help="when inference falls behind: wait (lossless; default for files) or drop-oldest "
                        "(default for cameras and streams)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outputs", "An output's folder must exist; the output itself (file or folder) is created.")
    g.add_argument("-o", "--output", action="append", default=[], metavar="PATH_OR_URL",
                   help="annotated output: .mp4/.mov/.mkv video, .png/.jpg image, or a folder (one PNG per frame); with "
                        "several inputs, a folder (DIR/NAME.mp4 each) or a pattern with {name} and/or {index}. Also a "
                        "stream to publish: rtmp://HOST/APP/KEY, rtsp://HOST:PORT/PATH, srt://, udp://, tcp:// or "
                        "DIR/stream.m3u8 (HLS); repeat -o to record and publish at once")
    g.add_argument("--hls-time", type=float, default=2.0, metavar="S", help="HLS: seconds per segment (default 2)")
    g.add_argument("--hls-list-size", type=int, default=5, metavar="N",
                   help="HLS: segments in the playlist; older ones are deleted (default 5)")
    g.add_argument("--json", type=Path, metavar="PATH",
                   help="write JSON Lines: one record per frame with its segments (id, label, score, area, bbox)")
    add_json_masks_arg(g)
    g.add_argument("--masks", type=Path, metavar="DIR",
                   help="write one indexed PNG per frame holding the class (or segment) id of every pixel")
    add_masks_by_arg(g)
    g.add_argument("--segment-time", type=_seconds, metavar="TIME",
                   help="rotate the output video every TIME (e.g. 10m): rec.mp4 -> rec-000.mp4, rec-001.mp4...; "
                        "a name with %%-codes is a strftime pattern of each file's start (rec-%%Y%%m%%d-%%H%%M%%S.mp4)")
    add_encoder_arg(g)
    display = g.add_mutually_exclusive_group()
    display.add_argument("--no-display", action="store_true", help="never open a window (headless)")
    display.add_argument("--display", action="store_true", help="open a window also when writing -o")
    add_serve_args(g, "browser live view: a page, /stream.mjpg, /stats, /metrics and /healthz")


def add_general_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("messages")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log more")
    g.add_argument("--debug", action="store_true", help="log everything and show tracebacks")


def add_ray_args(g) -> None:
    """Where the work runs (``batch`` and ``fleet``): the Ray cluster and each worker's share of it."""
    g.add_argument("--ray", metavar="ADDRESS", help="join this Ray cluster (host:6379, ray://host:10001 or auto); "
                                                    "default: start a local Ray")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="Ray actors, each with its own model (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs per worker (default 0: CPU)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                   help="CPUs per worker, also its forward's threads (default 1)")


def add_json_masks_arg(g) -> None:
    g.add_argument("--json-masks", action="store_true", help="add each segment's mask to the JSON as COCO RLE")


def add_masks_by_arg(g) -> None:
    g.add_argument("--masks-by", choices=[m.value for m in MasksBy], default=MasksBy.SEGMENT.value,
                   help="instance/panoptic masks: each pixel's segment id (default) or its track id")


def add_encoder_arg(g) -> None:
    g.add_argument("--encoder", choices=[e.value for e in Encoder], default=Encoder.AUTO.value,
                   help="H.264 encoder of video outputs: libx264 (CPU) or h264_nvenc (NVIDIA GPU; falls back to "
                        "libx264 with one warning when it cannot open). auto: h264_nvenc when the model runs on CUDA "
                        "and the GPU has an encoder")


def add_serve_args(g, what: str) -> None:
    """``--serve``, ``--serve-token``, ``--serve-host`` (``run``'s live view and ``fleet``'s dashboard)."""
    g.add_argument("--serve", metavar="[HOST:]PORT",
                   help=f"{what} on 127.0.0.1:PORT (0: any free port); another HOST needs --serve-token")
    g.add_argument("--serve-token", metavar="SECRET",
                   help="--serve: every request must carry ?token=SECRET (or Authorization: Bearer SECRET); "
                        "serving beyond 127.0.0.1 without one makes one up and prints it once")
    g.add_argument("--serve-host", action="append", default=[], metavar="NAME",
                   help="--serve: a host name the page may be reached by (repeatable); IP addresses and "
                        "localhost always work, other names are refused (DNS rebinding)")


def add_outdir_args(g, *, layout: str, json: str, masks: str) -> None:
    """``-o OUTDIR`` and the per-input exports of ``batch`` and ``fleet`` (flags: the files go in ``OUTDIR``)."""
    g.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR",
                   help=f"folder for {layout} (created; its parent must exist)")
    g.add_argument("--json", action="store_true", help=f"also write {json}")
    add_json_masks_arg(g)
    g.add_argument("--masks", action="store_true", help=f"also write {masks} (a label PNG per frame)")
    add_masks_by_arg(g)


def add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="video files, folders (their videos), globs ('clips/**/*.mp4') or text files of paths/URLs")
    g = p.add_argument_group("Ray and outputs")
    add_outdir_args(g, layout="NAME-HASH.mp4 per input and manifest.jsonl", json="NAME-HASH.jsonl (segments per frame)",
                    masks="NAME-HASH.masks/")
    add_ray_args(g)


def add_fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCES",
                   help="live sources: stream URLs, camera:N (on a worker that has it), or text files of them")
    g = p.add_argument_group("Ray, workers and outputs")
    add_outdir_args(g, layout="OUTDIR/NAME/rec-NNN.mp4 per source", json="rec-NNN.jsonl beside each rec-NNN.mp4 "
                    "(same frames)", masks="OUTDIR/NAME/masks-NNN/")
    add_ray_args(g)
    g.add_argument("--max-restarts", type=int, default=-1, metavar="N",
                   help="Ray restarts of a worker that dies (default -1: always)")
    g.add_argument("--segment-time", type=_seconds, default=300.0, metavar="TIME",
                   help="start a new file every TIME (default 5m): OUTDIR/NAME/rec-000.mp4, rec-001.mp4...")
    add_encoder_arg(g)
    add_serve_args(g, "one dashboard for every source of every worker: the page, /stream.mjpg?source=NAME, "
                      "/stats, /metrics and /healthz")
    add_reading_args(p.add_argument_group("input"))


def add_bench_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("benchmark")
    g.add_argument("--video", type=Path, metavar="PATH", help="input video (default: a generated 720p street clip)")
    g.add_argument("--frames", type=int, default=48, metavar="N", help="frames to time (default 48)")
    g.add_argument("--naive-frames", type=int, default=8, metavar="N", help="frames for the slow naive loop (default 8)")
    g.add_argument("--repeats", type=int, default=3, metavar="N", help="timed runs per row, after a warm-up (default 3)")
    g.add_argument("--no-loaded", action="store_true",
                   help="skip the rows run as separate commands, alone and beside a busy process")
    g.add_argument("--out", type=Path, default=Path("benchmarks/results"), metavar="DIR",
                   help="folder for the JSON results (default: benchmarks/results)")
    g.add_argument("--engines", default="torch:float32,openvino:float32,openvino:auto", metavar="LIST",
                   help="rows per engine and precision, ENGINE:DTYPE comma-separated (default: "
                        "torch:float32,openvino:float32,openvino:auto, auto being bf16 where the CPU has it; "
                        "'' for none): forward, the whole path, the command with its start-up, alone and beside "
                        "a busy process")


_BENCH_MODEL = dict(default_model=None, default_batch=8)  # a generated SegFormer-B0 unless --model, batch 8
COMMAND_GROUPS = {  # each command's argument groups, in help order: the same group, the same flags
    "run": (add_input_args, add_model_args, add_render_args, add_output_args, add_general_args),
    "batch": (add_batch_args, add_model_args, add_render_args, add_general_args),
    "bench": (add_bench_args, lambda p: add_model_args(p, **_BENCH_MODEL), add_general_args),
    "fleet": (add_fleet_args, add_model_args, add_render_args, add_general_args),
}
_COMMAND_TEXT = {  # (prog, help, description)
    "run": ("streamseg [run]", "segment inputs (the default: streamseg INPUT... is streamseg run INPUT...)",
            "Segment a video, image, folder, stream or camera with a Hugging Face model, live: into an annotated "
            "MP4,\nimages, a window or a browser page."),
    "batch": ("streamseg batch", "many videos on Ray",
              "Annotate many videos on Ray (local or a cluster), resumably: finished outputs are checked and\n"
              "skipped when the same command runs again."),
    "fleet": ("streamseg fleet", "live sources on a fleet of Ray workers",
              "Record many live sources with a fleet of Ray workers (local or a cluster): workers that die are\n"
              "restarted and their sources resume; one dashboard; SIGINT/SIGTERM stops every worker cleanly."),
    "bench": ("streamseg bench", "the side-by-side benchmark",
              "Time every stage (decode, forward, inference, render, encode), the whole streamseg path and the\n"
              "naive per-frame pipeline loop side by side in one run; write the table and a JSON file."),
}


def build_parser() -> argparse.ArgumentParser:
    """``streamseg [run] ...``, ``streamseg batch ...``, ``streamseg bench ...``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="streamseg", formatter_class=fmt, epilog=_COMMANDS_HELP,
                                description="Segment video with any Hugging Face segmentation model, live.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for command, groups in COMMAND_GROUPS.items():
        prog, short, description = _COMMAND_TEXT[command]
        parser = sub.add_parser(command, prog=prog, help=short, description=description, formatter_class=fmt,
                                epilog=_COMMANDS_HELP if command == "run" else None)
        for add_group in groups:
            add_group(parser)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """``streamseg INPUT...`` (no command) is ``streamseg run INPUT...``; so is ``streamseg --help``."""
    if not argv or (argv[0] not in COMMANDS and argv[0] != "--version"):
        argv = ["run", *argv]
    return build_parser().parse_args(argv)

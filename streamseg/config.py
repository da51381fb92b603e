"""One frozen, validated configuration per run.

The CLI turns argv into a :class:`RunConfig`; the library never reads argv or
the environment. Validation happens once, in ``__post_init__``, and raises
:class:`~streamseg.errors.InputError` with the allowed values.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DEFAULT_MODEL = "nvidia/segformer-b0-finetuned-ade-512-512"


def parse_seconds(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"``, ``"1:30"`` or ``"1:00:00"`` -> seconds. Raises ValueError."""
    t = text.strip().lower()
    if ":" in t:
        seconds = 0.0
        for part in t.split(":"):
            seconds = seconds * 60 + float(part)
    else:
        scale = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
        seconds = float(t[:-1]) * scale if scale else float(t)
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite time: {text!r}")
    return seconds


def choice(kind: type[enum.Enum], value: object, flag: str) -> enum.Enum:
    """``value`` as a member of ``kind``; anything else is an :class:`InputError` that lists the allowed values."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise InputError(f"invalid {flag} {value!r}: expected {allowed}") from None


MAX_PROMPTS = 32  # texts a prompt set may hold (the renderer's palette is sized for it)


def parse_prompts(text: str | Sequence[str]) -> tuple[str, ...]:
    """The one reading of a prompt set, from ``--prompt`` or the live view: ``"person, red car"`` ->
    ``("person", "red car")``: comma-separated, trimmed, repeats dropped. Raises :class:`InputError`."""
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    prompts = tuple(dict.fromkeys(p.strip() for p in items if p.strip()))
    if not prompts:
        raise InputError("--prompt needs at least one text, e.g. --prompt \"person, red car\"")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(f"--prompt takes at most {MAX_PROMPTS} texts, got {len(prompts)}")
    if any(len(p) > 200 for p in prompts):
        raise InputError("a prompt is at most 200 characters")
    return prompts


class DropPolicy(str, enum.Enum):
    """What a full channel does with a new item."""

    WAIT = "wait"  # the producer blocks: lossless, for files
    DROP_OLDEST = "drop-oldest"  # the oldest queued item is discarded and counted: for live sources


class Task(str, enum.Enum):
    """What the model is asked for. AUTO: what the model supports, panoptic first (as the transformers pipeline)."""

    AUTO = "auto"
    SEMANTIC = "semantic"
    INSTANCE = "instance"
    PANOPTIC = "panoptic"


class Style(str, enum.Enum):
    """How results are drawn (``--style``)."""

    FILL = "fill"  # alpha blend of the class colours
    CONTOUR = "contour"  # outlines only
    FILL_CONTOUR = "fill+contour"
    SIDE_BY_SIDE = "side-by-side"  # original | overlay
    MASK = "mask"  # the colours alone
    BLUR_BACKGROUND = "blur-background"  # keep --keep classes, blur the rest
    REPLACE_BACKGROUND = "replace-background"  # keep --keep classes, replace the rest


class Engine(str, enum.Enum):
    """What runs a semantic model's forward (``--engine``)."""

    AUTO = "auto"  # OpenVINO for semantic models on the CPU (when installed), else torch
    TORCH = "torch"  # eager PyTorch (or torch.compile with --compile)
    ONNXRUNTIME = "onnxruntime"  # the model exported to ONNX, run by ONNX Runtime on the CPU; falls back to torch
    OPENVINO = "openvino"  # the model converted to OpenVINO IR, run on the CPU (bf16 where native); falls back to torch


class Blend(str, enum.Enum):
    """Where fill, mask, blur- and replace-background are drawn for semantic models (``--blend``)."""

    AUTO = "auto"  # the device on a GPU, the host on the CPU
    DEVICE = "device"  # on the model's device, where the frames and labels already are
    HOST = "host"  # with OpenCV on the render thread


class Encoder(str, enum.Enum):
    """The H.264 encoder of video outputs (``--encoder``)."""

    AUTO = "auto"  # h264_nvenc when the model runs on CUDA and the GPU has an encoder, else libx264
    LIBX264 = "libx264"
    H264_NVENC = "h264_nvenc"


class MasksBy(str, enum.Enum):
    """What an instance/panoptic mask PNG holds per pixel (``--masks-by``)."""

    SEGMENT = "segment"
    TRACK = "track"


class DType(str, enum.Enum):
    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which model to load and where it runs."""

    name: str = DEFAULT_MODEL
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: DType = DType.AUTO
    trust_remote_code: bool = False
    task: Task = Task.AUTO
    # Instance/panoptic post-processing, with the transformers pipeline's defaults.
    threshold: float = 0.9  # keep segments whose class score is above this
    mask_threshold: float = 0.5  # a pixel belongs to a mask above this probability
    overlap_threshold: float = 0.5  # drop a segment when less than this share of its mask survives overlaps
    smooth: float = 0.0  # semantic: weight of the past in an moving average of class probabilities (0: off)
    compile: bool = False  # torch.compile the model (slow first batch; faster after)
    engine: Engine = Engine.AUTO
    size: int | tuple[int, int] | None = None  # inference resolution: shortest edge, or (width, height); None: the model's
    infer_every: int = 1  # run the model on every Nth frame of a source; the frames between reuse its labels
    track_buffer: int = 30  # instance/panoptic: frames a track outlives its last match (then its id is retired)
    prompts: str | tuple[str, ...] = ()  # text prompts (CLIPSeg), each a class named by its text; "a, b" is read
    prompt_threshold: float = 0.5  # a pixel takes its best prompt when that prompt's probability is at least this
    points: tuple[tuple[float, float], ...] = ()  # SAM2 video: objects to track from each source's first frame

    def __post_init__(self) -> None:
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise InputError(f"invalid device {dev!r}: expected auto, cpu, cuda or cuda:N")
        object.__setattr__(self, "dtype", choice(DType, self.dtype, "--dtype"))
        object.__setattr__(self, "task", choice(Task, self.task, "--task"))
        object.__setattr__(self, "engine", choice(Engine, self.engine, "--engine"))
        if self.compile and self.engine not in (Engine.TORCH, Engine.AUTO):
            raise InputError("--compile applies to --engine torch only")
        if not 0.0 <= self.smooth < 1.0:
            raise InputError(f"invalid smooth {self.smooth}: expected a value in [0, 1)")
        if isinstance(self.prompts, str) or self.prompts:  # --prompt "" is an error, not "no prompts"
            object.__setattr__(self, "prompts", parse_prompts(self.prompts))
        if not 0.0 < self.prompt_threshold < 1.0:
            raise InputError(f"invalid --prompt-threshold {self.prompt_threshold}: expected a probability between 0 "
                             "and 1")
        if self.track_buffer < 0:
            raise InputError(f"invalid --track-buffer {self.track_buffer}: expected 0 or more")
        if self.infer_every < 1:
            raise InputError(f"invalid --infer-every {self.infer_every}: expected 1 or more")
        if self.size is not None:
            sizes = self.size if isinstance(self.size, tuple) else (self.size,)
            if not all(isinstance(v, int) and 16 <= v <= 8192 for v in sizes):
                raise InputError(f"invalid --size {self.size}: expected 16..8192 pixels (S or WxH)")
        for name in ("threshold", "mask_threshold", "overlap_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"invalid {name.replace('_', '-')} {value}: expected a value in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """How to draw. Class selections are names or ids, resolved against the model's labels by the renderer."""

    alpha: float = 0.4
    legend: bool = False
    show_fps: bool = False
    style: Style = Style.FILL
    labels: bool = False  # write each segment's label on it
    classes: tuple[str, ...] = ()  # draw only these (empty: all)
    exclude: tuple[str, ...] = ()  # never draw these
    keep: tuple[str, ...] = ()  # blur-/replace-background: the classes left as they are
    background: str = "#00b140"  # replace-background: a colour (#RRGGBB) or an image file
    blend: Blend = Blend.AUTO  # where fill/mask/blur-/replace-background are drawn

    def __post_init__(self) -> None:
        object.__setattr__(self, "blend", choice(Blend, self.blend, "--blend"))
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"invalid alpha {self.alpha}: expected a value in [0, 1]")
        object.__setattr__(self, "style", choice(Style, self.style, "--style"))
        if self.style in (Style.BLUR_BACKGROUND, Style.REPLACE_BACKGROUND) and not self.keep:
            raise InputError(f"--style {self.style.value} needs --keep CLASS[,CLASS...] (e.g. --keep person)")


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """How sources are read: network timeouts, reconnects, how much to take."""

    timeout: float = 10.0  # network open/read timeout
    reconnect: int | None = None  # live streams: reconnect attempts in a row (None: keep trying)
    reconnect_max_delay: float = 30.0  # longest wait between two attempts (exponential backoff from 0.5 s)
    duration: float | None = None  # seconds of input to process (live: wall clock); None: all
    max_latency: float = 1.0  # live: the capture-to-output latency the adaptive batch keeps under

    def __post_init__(self) -> None:
        for name in ("duration", "timeout", "reconnect_max_delay", "max_latency"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"invalid --{name.replace('_', '-')} {value}: expected a positive time")
        if self.reconnect is not None and self.reconnect < 0:
            raise InputError(f"invalid --reconnect {self.reconnect}: expected 0 or more attempts")


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Where results go. With several sources, ``output`` is a folder or a ``{name}``/``{index}`` pattern,
    and ``json_path``/``masks_dir`` get one file or folder per source."""

    output: Path | None = None  # video, image or folder
    publish: tuple[str, ...] = ()  # streams to publish: rtmp://, rtsp://, srt://, udp://, tcp:// URLs, .m3u8 playlists
    hls_time: float = 2.0  # HLS: seconds per segment
    hls_list_size: int = 5  # HLS: segments in the playlist
    publish_reconnect: int | None = None  # publishers: reconnect attempts in a row (None: keep trying)
    publish_reconnect_max_delay: float = 30.0
    publish_timeout: float = 10.0  # publishers: seconds to connect, and a connection may go without sending
    display: bool = False  # a window
    json_path: Path | None = None  # JSON Lines export
    json_masks: bool = False  # ... with COCO RLE masks
    masks_dir: Path | None = None  # one label-map PNG per frame
    masks_by: MasksBy = MasksBy.SEGMENT  # instance/panoptic --masks: each pixel's segment id, or its track id
    segment_time: float | None = None  # rotate the output video every this many seconds
    json_segments: bool = False  # with segment_time: JSON Lines per video segment, named like it (streamseg fleet)
    serve: str | None = None  # [HOST:]PORT of the browser live view
    serve_token: str | None = None  # checked on every request; made up when serving beyond 127.0.0.1 without one
    serve_hosts: tuple[str, ...] = ()  # names the live view answers to besides IP addresses and localhost
    encoder: Encoder = Encoder.AUTO  # H.264 for video files

    def __post_init__(self) -> None:
        if not (math.isfinite(self.publish_timeout) and self.publish_timeout > 0):
            raise InputError(f"invalid --timeout {self.publish_timeout}: expected a number of seconds above 0")
        if not (self.hls_time > 0 and self.hls_list_size >= 1):
            raise InputError(f"invalid HLS settings: --hls-time {self.hls_time} (> 0), --hls-list-size "
                             f"{self.hls_list_size} (>= 1)")
        object.__setattr__(self, "encoder", choice(Encoder, self.encoder, "--encoder"))
        object.__setattr__(self, "masks_by", choice(MasksBy, self.masks_by, "--masks-by"))
        if self.json_masks and self.json_path is None:
            raise InputError("--json-masks needs --json PATH")
        if self.segment_time is not None and not (math.isfinite(self.segment_time) and self.segment_time > 0):
            raise InputError(f"invalid --segment-time {self.segment_time}: expected a positive time")
        if self.segment_time is not None and self.output is None:
            raise InputError("--segment-time needs -o OUTPUT.mp4")

    @property
    def anything(self) -> bool:
        """Whether a run with these outputs leaves or shows anything (a window, a file, a stream, the live view)."""
        return bool(self.display or self.output is not None or self.publish or self.json_path is not None
                    or self.masks_dir is not None or self.serve is not None)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one run needs. ``sources`` are paths, URLs or ``camera:N``; several are batched together."""

    sources: tuple[str, ...]
    model: ModelConfig = ModelConfig()
    render: RenderConfig = RenderConfig()
    outputs: OutputConfig = OutputConfig()
    input: InputConfig = InputConfig()
    batch_size: int = 4
    drop_policy: DropPolicy | None = None  # None: wait for files, drop-oldest for live sources
    queue_size: int | None = None  # None: sized from the batch size
    threads: int | None = None  # the forward's torch threads (None: the thread budget decides)
    manage_threads: bool = True  # False: every library keeps its own thread defaults

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if self.threads is not None and self.threads < 1:
            raise InputError(f"invalid --threads {self.threads}: expected 1 or more, auto or library")
        if not self.sources:
            raise InputError("give an INPUT (file, folder, URL) or --camera N")
        if self.batch_size < 1:
            raise InputError(f"invalid batch size {self.batch_size}: expected 1 or more")
        if self.queue_size is not None and self.queue_size < 1:
            raise InputError(f"invalid queue size {self.queue_size}: expected 1 or more")
        if self.drop_policy is not None:
            object.__setattr__(self, "drop_policy", choice(DropPolicy, self.drop_policy, "--drop-policy"))

    @property
    def channel_size(self) -> int:
        """Items a stage may queue ahead: two batches, so one fills while one runs."""
        return self.queue_size or max(2, 2 * self.batch_size)

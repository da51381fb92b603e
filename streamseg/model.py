"""Load a Hugging Face semantic-segmentation model and run it on batches of frames.

:class:`Segmenter` is owned by one thread (the inference thread in a pipeline,
or the caller in the Python API). Pre-processing (resize, rescale, normalise as
the model's image-processor config says) runs in torch on the model's device on
whole batches of uint8 frames; post-processing turns logits into a class id per
source pixel on the device, without upsampling every class to full resolution.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import DType, Engine, ModelConfig, Task
from .errors import InputError, ModelLoadError, StreamsegError
from .frames import Frame, SegmentationResult

log = logging.getLogger(__name__)

# PIL resampling ids (what preprocessor_config.json stores) -> torch modes.
_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """What the model's image processor does to a picture, read from its config."""

    size: Mapping[str, int | None]
    resample: str = "bilinear"
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_size: Mapping[str, int] | None = None
    flip_channel_order: bool = False
    keep_aspect_ratio: bool = False
    ensure_multiple_of: int = 1
    size_divisor: int = 0  # Mask2Former/MaskFormer: round the resized size up to a multiple of this

    @classmethod
    def from_processor(cls, proc: object) -> PreprocessSpec:
        def get(name: str, default: object) -> object:
            value = getattr(proc, name, None)
            return default if value is None else value

        size = get("size", {"height": 512, "width": 512})
        size = {k: (size.get(k) if isinstance(size, Mapping) else getattr(size, k, None))
                for k in ("height", "width", "shortest_edge", "longest_edge")}
        crop = get("crop_size", None) if get("do_center_crop", False) else None
        if crop is not None:
            crop = {k: (crop[k] if isinstance(crop, Mapping) else getattr(crop, k)) for k in ("height", "width")}
        resample = get("resample", 2)
        return cls(
            size=size,
            resample=_RESAMPLE.get(int(resample), "bilinear"),
            do_resize=bool(get("do_resize", True)),
            do_rescale=bool(get("do_rescale", True)),
            rescale_factor=float(get("rescale_factor", 1 / 255)),
            do_normalize=bool(get("do_normalize", True)),
            image_mean=tuple(float(v) for v in get("image_mean", cls.image_mean)),
            image_std=tuple(float(v) for v in get("image_std", cls.image_std)),
            crop_size=crop,
            flip_channel_order=bool(get("do_flip_channel_order", False)),
            keep_aspect_ratio=bool(get("keep_aspect_ratio", False)),
            ensure_multiple_of=int(get("ensure_multiple_of", 1) or 1),
            size_divisor=int(get("size_divisor", 0) or 0),
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` a ``height x width`` picture is resized to."""
        s = self.size
        if s.get("height") and s.get("width"):
            th, tw = int(s["height"]), int(s["width"])
            if self.keep_aspect_ratio:  # DPT: scale as little as possible, keep the aspect ratio
                sh, sw = th / height, tw / width
                scale = sw if abs(1 - sw) < abs(1 - sh) else sh
                th, tw = height * scale, width * scale
            m = self.ensure_multiple_of
            return max(m, int(round(th / m) * m)), max(m, int(round(tw / m) * m))
        if s.get("shortest_edge") and s.get("longest_edge"):  # DETR, MaskFormer, Mask2Former
            from transformers.image_transforms import get_size_with_aspect_ratio

            th, tw = get_size_with_aspect_ratio((height, width), int(s["shortest_edge"]), int(s["longest_edge"]))
            if self.size_divisor:
                d = self.size_divisor
                th, tw = int(math.ceil(th / d) * d), int(math.ceil(tw / d) * d)
            return th, tw
        if s.get("shortest_edge"):  # MobileViT: the short side to this, the aspect ratio kept
            short, long = (height, width) if height <= width else (width, height)
            new_short = int(s["shortest_edge"])
            new_long = int(new_short * long / short)
            return (new_short, new_long) if height <= width else (new_long, new_short)
        raise InputError(f"unsupported image-processor size {dict(s)}")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an :class:`InputError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 on the CPU."""
    if dtype is DType.AUTO:
        return torch.float16 if device.type == "cuda" else torch.float32
    return {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}[dtype]


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _load_error(name: str, exc: Exception) -> ModelLoadError:
    text = str(exc)
    if isinstance(exc, ValueError) and "Unrecognized configuration class" in text:
        return ModelLoadError(f"model {name!r} is not a semantic-segmentation model this version supports "
                              f"({text.splitlines()[0][:160]})")
    if "couldn't connect" in text or "offline" in text.lower() or "connection" in text.lower():
        why = "it is not a local folder and the Hugging Face Hub cannot be reached"
    else:
        why = "it is not a local folder nor a model on the Hugging Face Hub"
    return ModelLoadError(f"model {name!r} not found: {why}; pass a local folder with --model PATH")


_TASK_ORDER = (Task.PANOPTIC, Task.INSTANCE, Task.SEMANTIC)  # auto picks the first the model supports


def supported_tasks(processor: object, semantic_head: bool) -> list[Task]:
    """The tasks a model's image processor can post-process, panoptic first (as the transformers pipeline)."""
    if semantic_head:  # *ForSemanticSegmentation models give per-class logits only
        return [Task.SEMANTIC]
    tasks = [t for t in _TASK_ORDER if hasattr(processor, f"post_process_{t.value}_segmentation")]
    if type(processor).__name__.startswith("OneFormer") and not getattr(processor, "class_info_file", None):
        # transformers' OneFormer instance post-processing reads the dataset's class_info_file.
        tasks = [t for t in tasks if t is not Task.INSTANCE]
    return tasks


class Segmenter:
    """A segmentation model (semantic, instance or panoptic) ready to label batches of frames.

    Build one with :meth:`load`. Not thread-safe: one thread calls it.
    """

    def __init__(self, model: torch.nn.Module, spec: PreprocessSpec, *, device: torch.device,
                 dtype: torch.dtype, id2label: Mapping[int, str], name: str = "", task: Task = Task.SEMANTIC,
                 processor: object | None = None, threshold: float = 0.9, mask_threshold: float = 0.5,
                 overlap_threshold: float = 0.5, smooth: float = 0.0, logits_head: bool | None = None,
                 task_inputs: torch.Tensor | None = None, compile: bool = False,
                 engine: Engine = Engine.TORCH) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.name = name
        self.task = Task(task)
        self.processor = processor
        self.threshold, self.mask_threshold, self.overlap_threshold = threshold, mask_threshold, overlap_threshold
        self.smooth = smooth
        self._ema: torch.Tensor | None = None  # (C, h, w) smoothed class probabilities of the last frame
        # *ForSemanticSegmentation models give per-class logits, post-processed here on the device;
        # universal models (Mask2Former, OneFormer, DETR...) go through their processor's post-processing.
        self.logits_head = (self.task is Task.SEMANTIC) if logits_head is None else logits_head
        self._task_inputs = task_inputs  # OneFormer: the tokenised "the task is ..." (1, L)
        self._eager = model  # what runs if the compiled graph fails
        self._pad_to = 0  # compiled: the largest batch so far; smaller ones are padded to it
        if compile:
            if not self.logits_head:
                raise InputError("--compile applies to semantic models (per-class logits) only")
            self.model = torch.compile(model, dynamic=False)
        self.max_batch = 0  # frames per forward at most (0: no limit); lowered when the device runs out of memory
        self._onnx = None  # an OnnxForward when ONNX Runtime runs the forward
        if Engine(engine) is Engine.ONNXRUNTIME:
            self._onnx = self._onnx_engine()
        if smooth and not self.logits_head:
            raise InputError("--smooth applies to semantic models (per-class logits) only")
        if self.task is not Task.SEMANTIC and processor is None:
            raise ValueError(f"a {self.task.value} segmenter needs the model's image processor")
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.num_labels = max(len(self.id2label), int(getattr(model.config, "num_labels", 0) or 0))
        self._pixel_mask = "pixel_mask" in inspect.signature(model.forward).parameters
        mean = torch.tensor(spec.image_mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.image_std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        scale = spec.rescale_factor if spec.do_rescale else 1.0
        # x * scale, then (x - mean) / std, folded into one multiply-add.
        if spec.do_normalize:
            self._mul, self._add = scale / std, -mean / std
        else:
            self._mul, self._add = torch.full_like(std, scale), torch.zeros_like(mean)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, config: ModelConfig) -> Segmenter:
        """Load ``config.name`` (a Hub id or a local folder) through the Auto classes.

        Semantic models (``AutoModelForSemanticSegmentation``: SegFormer, UperNet, DPT, BEiT,
        MobileViT...) and universal ones (``AutoModelForUniversalSegmentation``: Mask2Former,
        MaskFormer, DETR panoptic...). Raises :class:`ModelLoadError` (an :class:`InputError`)
        when the model cannot be found, is not a segmentation model, or cannot do ``config.task``.
        """
        from transformers import (AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation,
                                  AutoModelForUniversalSegmentation)
        from transformers.models.auto.modeling_auto import (MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
                                                            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES)

        name = config.name
        path = Path(name).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelLoadError(f"model {name!r} is a file; pass the folder that holds config.json")
            name = str(path)
        elif _looks_like_path(name):
            raise ModelLoadError(f"model folder not found: {name}")
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        trust = config.trust_remote_code
        try:
            hf_config = AutoConfig.from_pretrained(name, trust_remote_code=trust)
        except (OSError, ValueError) as exc:
            raise _load_error(name, exc) from exc
        model_type = getattr(hf_config, "model_type", "")
        semantic_head = model_type in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
        if semantic_head:
            auto = AutoModelForSemanticSegmentation
        elif model_type in MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES:
            auto = AutoModelForUniversalSegmentation
        else:
            raise ModelLoadError(f"model {name!r} is not a segmentation model (its type is {model_type or 'unknown'!r})")
        try:
            model = auto.from_pretrained(name, trust_remote_code=trust)
        except ImportError as exc:  # e.g. timm for the Hub's DETR checkpoints, scipy for Mask2Former
            text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            hint = " (install it with: pip install 'streamseg[timm]')" if "timm" in text.lower() else ""
            raise ModelLoadError(f"model {name!r} needs a package that is not installed: {text[:160]}{hint}") from exc
        except ValueError as exc:
            raise _load_error(name, exc) from exc
        except OSError as exc:
            raise ModelLoadError(f"model {name!r} has a config but its weights could not be loaded: "
                                 f"{str(exc).splitlines()[0][:200]}") from exc
        try:
            processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=trust)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model {name!r} has no usable image-processor config "
                                 f"(preprocessor_config.json): {str(exc).splitlines()[0][:200]}") from exc
        tasks = supported_tasks(processor, semantic_head)
        task = tasks[0] if config.task is Task.AUTO and tasks else config.task
        if task not in tasks:
            raise ModelLoadError(f"model {name!r} cannot do {task.value} segmentation; it can do: "
                                 f"{', '.join(t.value for t in tasks) or 'nothing streamseg knows'}")
        task_inputs = _oneformer_task_tokens(name, task, hf_config, trust) if model_type == "oneformer" else None
        if dtype != torch.float32 and device.type == "cpu":
            log.warning("%s on the CPU is much slower than float32 on most processors", dtype)
        model = model.to(device=device, dtype=dtype).eval()
        id2label = getattr(hf_config, "id2label", None) or {}
        log.info("loaded %s (%s) on %s as %s", name, task.value, device, dtype)
        return cls(model, PreprocessSpec.from_processor(processor), device=device, dtype=dtype, id2label=id2label,
                   name=config.name, task=task, processor=processor, threshold=config.threshold,
                   mask_threshold=config.mask_threshold, overlap_threshold=config.overlap_threshold,
                   smooth=config.smooth, logits_head=semantic_head,
                   task_inputs=None if task_inputs is None else task_inputs.to(device),
                   compile=config.compile, engine=config.engine)

    # -- the three steps ------------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 ``(H, W, 3)`` RGB pictures -> normalised ``(B, 3, h, w)`` on the device, in the model's dtype."""
        groups: list[torch.Tensor] = []
        for batch in _same_size_runs(images):
            x = torch.from_numpy(np.stack(batch))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float()
            groups.append(self._resize(x))
        if len({g.shape[-2:] for g in groups}) > 1:  # frames of different sizes: pad to the largest, as the processors do
            h = max(g.shape[-2] for g in groups)
            w = max(g.shape[-1] for g in groups)
            groups = [F.pad(g, (0, w - g.shape[-1], 0, h - g.shape[-2])) for g in groups]
        x = torch.cat(groups) if len(groups) > 1 else groups[0]
        if self.spec.flip_channel_order:
            x = x.flip(1)
        x = x * self._mul + self._add
        return x.to(self.dtype).contiguous()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        h, w = x.shape[-2:]
        if spec.do_resize:
            th, tw = spec.output_size(h, w)
            if (th, tw) != (h, w):
                if spec.resample == "nearest":
                    x = F.interpolate(x, size=(th, tw), mode="nearest")
                else:  # PIL antialiases when it shrinks; so does this
                    x = F.interpolate(x, size=(th, tw), mode=spec.resample, align_corners=False, antialias=True)
                    x = x.round_().clamp_(0, 255)  # PIL resizes in uint8
        if spec.crop_size:
            ch, cw = spec.crop_size["height"], spec.crop_size["width"]
            h, w = x.shape[-2:]
            top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
            x = x[..., top:top + ch, left:left + cw]
        return x

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor):
        """The model's output for a pre-processed batch: logits ``(B, C, h, w)`` for semantic models,
        the full output object for instance/panoptic ones."""
        if self.logits_head:
            n = pixel_values.shape[0]
            if self.model is not self._eager:  # compiled: pad short batches rather than compile again
                self._pad_to = max(self._pad_to, n)
                if n < self._pad_to:
                    pad = pixel_values.new_zeros((self._pad_to - n, *pixel_values.shape[1:]))
                    pixel_values = torch.cat([pixel_values, pad])
            return self._run(pixel_values)[:n]
        kwargs = {}
        if self._task_inputs is not None:
            kwargs["task_inputs"] = self._task_inputs.expand(pixel_values.shape[0], -1)
        if self._pixel_mask:  # frames of one size fill the whole padded canvas
            kwargs["pixel_mask"] = torch.ones((pixel_values.shape[0], *pixel_values.shape[-2:]), dtype=torch.long,
                                              device=pixel_values.device)
        return self.model(pixel_values=pixel_values, **kwargs)

    def _onnx_engine(self):
        from . import onnx_runtime

        if not self.logits_head:
            log.warning("--engine onnxruntime runs semantic models only; running %s in torch", self.name or "the model")
            return None
        try:
            return onnx_runtime.OnnxForward(self.model)
        except onnx_runtime.EngineUnavailable as exc:
            log.warning("%s; running the model in torch", exc)
            return None

    @property
    def eager_model(self) -> torch.nn.Module:
        """The loaded torch model itself (not compiled, not exported)."""
        return self._eager

    @property
    def engine(self) -> Engine:
        """What actually runs the forward (after any fallback)."""
        return Engine.ONNXRUNTIME if self._onnx is not None else Engine.TORCH

    def _run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            from .onnx_runtime import EngineUnavailable

            try:
                return self._onnx(pixel_values)
            except EngineUnavailable as exc:
                log.warning("%s; running the model in torch from now on", exc)
                self._onnx = None
        try:
            return self.model(pixel_values=pixel_values).logits
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly instead
            if self.model is self._eager:
                raise
            log.warning("torch.compile failed (%s); running the model eagerly", str(exc).splitlines()[0][:160])
            self.model = self._eager
            return self.model(pixel_values=pixel_values).logits

    @torch.inference_mode()
    def postprocess(self, outputs, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Class ids at each source size ``(height, width)``, as ``post_process_semantic_segmentation`` gives.

        For instance/panoptic models, see :meth:`segment`; this returns their class maps (-1: no segment).
        """
        if not self.logits_head:
            return [parts[0] for parts in self._postprocess_segments(outputs, sizes)]
        out = []
        dtype = np.uint8 if self.num_labels <= 256 else (np.uint16 if self.num_labels <= 65536 else np.int32)
        for one, (height, width) in zip(outputs, sizes):
            one = one.float()
            if self.smooth:
                one = self._smoothed(one)
            labels = upsampled_argmax(one, height, width)
            out.append(labels.to(torch.int32).cpu().numpy().astype(dtype, copy=False))
        return out

    def _smoothed(self, logits: torch.Tensor) -> torch.Tensor:
        """Exponential moving average of class probabilities over consecutive frames, on the device."""
        probs = logits.softmax(0)
        if self._ema is None or self._ema.shape != probs.shape:
            self._ema = probs
        else:
            self._ema = self.smooth * self._ema + (1 - self.smooth) * probs
        return self._ema

    def reset(self) -> None:
        """Forget the smoothing state (call between unrelated videos)."""
        self._ema = None

    def _postprocess_segments(self, outputs, sizes: Sequence[tuple[int, int]]):
        """``(label_map, segment_map, infos)`` per frame, through the model's own post-processing (on the device)."""
        if self.dtype != torch.float32:  # post-processing in float32, as transformers does on float32 models
            for key in ("class_queries_logits", "masks_queries_logits", "logits", "pred_masks", "pred_boxes"):
                if getattr(outputs, key, None) is not None:
                    outputs[key] = outputs[key].float()
        target_sizes = [tuple(s) for s in sizes]
        if self.task is Task.SEMANTIC:
            maps = self.processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
            return [(m.to(torch.int32).cpu().numpy(), None, ()) for m in maps]
        fn = getattr(_segments_processor(self.processor), f"post_process_{self.task.value}_segmentation")
        results = fn(outputs, threshold=self.threshold, mask_threshold=self.mask_threshold,
                     overlap_mask_area_threshold=self.overlap_threshold, target_sizes=target_sizes)
        out = []
        for res, (height, width) in zip(results, sizes):
            seg = res["segmentation"]
            infos = tuple((int(i["id"]), int(i["label_id"]), float(i["score"])) for i in res["segments_info"])
            seg_map = (seg.to(torch.int32).cpu().numpy() if seg is not None
                       else np.full((height, width), -1, np.int32))
            lut = np.full(max([i for i, _, _ in infos] + [0]) + 2, -1, np.int32)  # segment id -> class id
            for seg_id, label_id, _ in infos:
                lut[seg_id] = label_id
            label_map = np.where(seg_map >= 0, lut[np.clip(seg_map, 0, len(lut) - 1)], -1).astype(np.int32)
            seg_map = np.where(label_map >= 0, seg_map, -1).astype(np.int32)  # one "no segment" value: -1
            out.append((label_map, seg_map, infos))
        return out

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class-id maps, one per uint8 RGB picture (-1 where an instance/panoptic model found no segment)."""
        return self._in_batches(self._label_maps, list(images))

    def segment(self, frames: Sequence[Frame]) -> list[SegmentationResult]:
        """One :class:`SegmentationResult` per frame, in order."""
        return self._in_batches(self._segment_batch, list(frames))

    def _label_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.forward(self.preprocess(images))
        return self.postprocess(outputs, [img.shape[:2] for img in images])

    def _segment_batch(self, frames: list[Frame]) -> list[SegmentationResult]:
        images = [f.image for f in frames]
        sizes = [img.shape[:2] for img in images]
        outputs = self.forward(self.preprocess(images))
        if self.task is Task.SEMANTIC:
            return [SegmentationResult(frame=f, label_map=m, id2label=self.id2label)
                    for f, m in zip(frames, self.postprocess(outputs, sizes))]
        return [SegmentationResult(frame=f, label_map=lm, task=self.task.value, segment_map=sm, segment_info=infos,
                                   id2label=self.id2label)
                for f, (lm, sm, infos) in zip(frames, self._postprocess_segments(outputs, sizes))]

    def _in_batches(self, fn, items: list) -> list:
        """``fn`` over ``items`` in batches of at most ``max_batch``; out of memory halves the batch and retries.

        ``max_batch`` stays at the size that worked, so later batches do not run out of memory again.
        """
        if not items:
            return []
        if self.max_batch and len(items) > self.max_batch:
            out = []
            for i in range(0, len(items), self.max_batch):
                out.extend(self._in_batches(fn, items[i:i + self.max_batch]))
            return out
        try:
            return fn(items)
        except torch.OutOfMemoryError as exc:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) == 1:
                raise StreamsegError(f"out of memory on {self.device} even with one frame per batch: "
                                     "use a smaller model or --device cpu") from exc
            half = (len(items) + 1) // 2
            log.warning("out of memory on %s with a batch of %d; retrying in batches of %d from now on",
                        self.device, len(items), half)
            self.max_batch = half
            return self._in_batches(fn, items[:half]) + self._in_batches(fn, items[half:])

    def iter_results(self, frames: Iterable[Frame], batch_size: int = 4) -> Iterator[SegmentationResult]:
        """Segment a source (or any iterable of frames) in batches, in this thread; results in order."""
        for batch in _batches(frames, batch_size):
            yield from self.segment(batch)


def _oneformer_task_tokens(name: str, task: Task, hf_config: object, trust: bool) -> torch.Tensor:
    """OneFormer's task input: "the task is {task}" tokenised as its processor does, ``(1, task_seq_len)``."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"OneFormer model {name!r} has no tokenizer for its task input: "
                             f"{str(exc).splitlines()[0][:200]}") from exc
    length = int(getattr(hf_config, "task_seq_len", 77))
    ids = tokenizer([f"the task is {task.value}"], padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt")["input_ids"]
    return ids


def _segments_processor(processor: object) -> object:
    """The processor whose instance/panoptic post-processing runs here.

    transformers' PIL OneFormer processor resizes masks with torchvision without importing
    it when torchvision is absent; its panoptic algorithm is MaskFormer's, whose PIL processor
    does the same in torch. So without torchvision, OneFormer's panoptic segments come from that one.
    """
    if type(processor).__name__ == "OneFormerImageProcessorPil":
        from transformers.models.oneformer import image_processing_pil_oneformer as oneformer_pil

        if not hasattr(oneformer_pil, "tvF"):
            from transformers.models.maskformer.image_processing_pil_maskformer import MaskFormerImageProcessorPil

            return MaskFormerImageProcessorPil()
    return processor


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _same_size_runs(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    runs: list[list[np.ndarray]] = []
    for img in images:
        if runs and runs[-1][0].shape == img.shape:
            runs[-1].append(img)
        else:
            runs.append([img])
    return runs


@functools.lru_cache(maxsize=16)
def _axis(n_out: int, n_in: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices and weights along one axis, exactly as ``F.interpolate(align_corners=False)``."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = (src - i0).float()
    return i0.to(device), i1.to(device), frac.to(device)


@functools.lru_cache(maxsize=16)
def _cells(n_out: int, n_in: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each low-resolution cell along one axis, the output positions it covers and their weights.

    Returns ``(slots, frac)``, both ``(n_in, S)``: output indices (-1 for padding) and the
    bilinear weight of the cell's far corner at each.
    """
    i0, _, frac = _axis(n_out, n_in, torch.device("cpu"))
    counts = torch.bincount(i0, minlength=n_in)
    width = int(counts.max())
    slots = torch.full((n_in, width), -1, dtype=torch.long)
    fracs = torch.zeros((n_in, width))
    start = torch.cumsum(counts, 0) - counts
    offset = torch.arange(n_out) - start[i0]
    slots[i0, offset] = torch.arange(n_out)
    fracs[i0, offset] = frac
    return slots.to(device), fracs.to(device)


def upsampled_argmax(logits: torch.Tensor, height: int, width: int, k: int = 2) -> torch.Tensor:
    """``argmax(interpolate(logits, (height, width), bilinear))`` without the full-size ``(C, H, W)`` tensor.

    Work is done per low-resolution cell (the square between four neighbouring logits).
    A cell whose four corners share their best class gives every pixel in it that class:
    a convex mix of vectors with the same argmax has that argmax. In the other cells the
    pixels are interpolated, but only for the ``k`` best classes of each corner.
    ``logits`` is ``(C, h, w)``; the result is ``(height, width)`` int64.
    """
    c, h, w = logits.shape
    if (h, w) == (height, width):
        return logits.argmax(0)
    dev = logits.device
    k = min(k, c)
    top = logits.topk(k, dim=0).indices  # (k, h, w), best first
    best = top[0]
    y0, _, _ = _axis(height, h, dev)
    x0, _, _ = _axis(width, w, dev)
    out = best[y0][:, x0]  # each pixel's top-left corner class: right wherever its cell agrees
    yn = torch.clamp(torch.arange(h, device=dev) + 1, max=h - 1)  # each cell's lower / right corner
    xn = torch.clamp(torch.arange(w, device=dev) + 1, max=w - 1)
    corners = torch.stack([best, best[:, xn], best[yn], best[yn][:, xn]])  # (4, h, w)
    cy, cx = (corners != best).any(0).nonzero(as_tuple=True)
    if cy.numel():
        pos = torch.stack([cy * w + cx, cy * w + xn[cx], yn[cy] * w + cx, yn[cy] * w + xn[cx]], 1)  # (M, 4)
        cand = top.reshape(k, h * w)[:, pos].permute(1, 0, 2).reshape(len(cy), 4 * k)  # (M, 4k)
        vals = logits.reshape(c, h * w)[cand[:, :, None], pos[:, None, :]]  # (M, 4k, 4 corners)
        rows, fy = _cells(height, h, dev)
        cols, fx = _cells(width, w, dev)
        fy, fx = fy[cy][:, :, None, None], fx[cx][:, None, :, None]  # (M, R, 1, 1), (M, 1, C, 1)
        v00, v01, v10, v11 = (vals[:, None, None, :, j] for j in range(4))  # (M, 1, 1, 4k)
        upper = v00 + fx * (v01 - v00)
        lower = v10 + fx * (v11 - v10)
        scores = upper + fy * (lower - upper)  # (M, R, C, 4k)
        labels = cand.gather(1, scores.flatten(1, 2).argmax(-1)).view(len(cy), rows.shape[1], cols.shape[1])
        r, q = rows[cy][:, :, None], cols[cx][:, None, :]  # output rows / columns of each slot
        valid = (r >= 0) & (q >= 0)
        r, q = r.expand_as(labels)[valid], q.expand_as(labels)[valid]
        out[r, q] = labels[valid]
    return out

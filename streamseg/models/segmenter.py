"""Load a Hugging Face segmentation model and run it on batches of frames.

:class:`Segmenter` is the one object callers use, whatever the model: it loads a model
from the Hub or a folder through the Auto classes, pre-processes batches of uint8 frames
in torch on the device (:mod:`streamseg.models.preprocess`), and hands forward and
post-processing to the model's family behind one small interface (:class:`Head`):
:class:`~streamseg.models.heads.semantic.SemanticHead` for per-class logits,
:class:`~streamseg.models.heads.universal.UniversalHead` for mask-classification models. Out of device
memory, it halves the batch and retries. Owned by one thread (the inference thread in a
pipeline, or the caller in the Python API).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from streamseg.config import DType, Engine, ModelConfig, Task
from streamseg.errors import InputError, ModelLoadError, StreamsegError, short_message
from streamseg.frames import Frame, SegmentationResult
from streamseg.models.heads.point_tracking import load_point_head
from streamseg.models.heads.prompts import load_prompt_head
from streamseg.models.heads.semantic import SemanticHead
from streamseg.models.heads.universal import UniversalHead, oneformer_task_tokens, supported_tasks

from .preprocess import Preprocessor, PreprocessSpec

log = logging.getLogger(__name__)


class Head(Protocol):
    """What a model family does after pre-processing: the forward, and its outputs as results."""

    task: Task
    model: torch.nn.Module  # what runs the forward (possibly compiled)
    eager_model: torch.nn.Module  # the loaded model itself

    def forward(self, pixel_values: torch.Tensor) -> object: ...

    def label_maps(self, outputs: object, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]: ...

    def results(self, outputs: object, frames: Sequence[Frame]) -> list[SegmentationResult]: ...

    def reset(self) -> None: ...


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


def _load_error(name: str, exc: Exception, offline: str | None = None) -> ModelLoadError:
    text = str(exc)
    if isinstance(exc, ValueError) and "Unrecognized configuration class" in text:
        return ModelLoadError(f"model {name!r} is not a semantic-segmentation model this version supports "
                              f"({short_message(exc, 160)})")
    if offline:
        why = f"it is not in the local cache and the Hugging Face Hub cannot be reached ({offline})"
    elif "couldn't connect" in text or "offline" in text.lower() or "connection" in text.lower():
        why = "it is not a local folder and the Hugging Face Hub cannot be reached"
    else:
        why = "it is not a local folder nor a model on the Hugging Face Hub"
    return ModelLoadError(f"model {name!r} not found: {why}; pass a local folder with --model PATH")


def hub_problem(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached right now (offline mode, no DNS, no route), or ``None``.

    One TCP connection to the Hub's endpoint instead of the client's five retries over ~30 s. Behind a
    proxy (``HTTPS_PROXY``) the Hub is assumed reachable: the client knows how to get there.
    """
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"{endpoint.hostname}: {exc.strerror or exc}"
    return None


def _weights_error(name: str, exc: Exception) -> Exception:
    """A one-line :class:`ModelLoadError` for weights that do not load; anything else as it is."""
    text = str(exc)
    if type(exc).__module__.startswith("safetensors"):
        return ModelLoadError(f"model {name!r}: its weights file is damaged or incomplete "
                              f"({short_message(exc, 120)}); download or save it again")
    if isinstance(exc, RuntimeError) and ("mismatch" in text.lower() or "size" in text.lower()):
        return ModelLoadError(f"model {name!r}: its weights do not fit its config.json (tensors of other shapes): "
                              "the config was changed, or the weights belong to another model")
    return exc


class Segmenter:
    """A segmentation model (semantic, instance or panoptic) ready to label batches of frames.

    Build one with :meth:`load`. Not thread-safe: one thread calls it.
    """

    def __init__(self, head: Head, preprocessor: Preprocessor, *, id2label: dict[int, str], num_labels: int,
                 name: str = "") -> None:
        self.head = head
        self.preprocessor = preprocessor
        self.device, self.dtype = preprocessor.device, preprocessor.dtype
        self.id2label = dict(id2label)
        self.num_labels = num_labels
        self.name = name
        self.task = head.task
        self.max_batch = 0  # frames per forward at most (0: no limit); lowered when the device runs out of memory
        self.blender = None  # a DeviceBlender: draw the style on the device (draw_on_device)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, config: ModelConfig) -> Segmenter:
        """Load ``config.name`` (a Hub id or a local folder) through the Auto classes.

        Semantic models (``AutoModelForSemanticSegmentation``: SegFormer, UperNet, DPT, BEiT,
        MobileViT...) and universal ones (``AutoModelForUniversalSegmentation``: Mask2Former,
        MaskFormer, DETR panoptic...). Raises :class:`ModelLoadError` (an :class:`InputError`)
        when the model cannot be found, is not a segmentation model, or cannot do ``config.task``.
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
            MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES,
        )

        name = config.name
        path = Path(name).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ModelLoadError(f"model {name!r} is a file; pass the folder that holds config.json")
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"model folder {name!r} has no config.json: it is not a saved Hugging Face "
                                     "model (save one with save_pretrained, or give a Hub id)")
            name = str(path)
        elif _looks_like_path(name):
            raise ModelLoadError(f"model folder not found: {name}")
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        trust = config.trust_remote_code
        offline = None if path.exists() else hub_problem()  # unreachable: the local cache only, no retries
        hub = {"trust_remote_code": trust, **({"local_files_only": True} if offline else {})}
        try:
            hf_config = AutoConfig.from_pretrained(name, **hub)
        except (OSError, ValueError) as exc:
            raise _load_error(name, exc, offline) from exc
        model_type = getattr(hf_config, "model_type", "")
        prompted = load_prompt_head(name, hub, config, device, dtype, model_type)  # CLIPSeg and --prompt
        if prompted is not None:
            return cls._prompted(prompted, name, hub, config, device, dtype)
        tracker = load_point_head(name, hub, config, device, dtype, model_type)  # SAM2 video and --point
        if tracker is not None:
            size = tracker.image_size  # SAM2's processor: a square, ImageNet's mean and std (torch, not torchvision)
            log.info("loaded %s (point tracking) on %s as %s", name, device, dtype)
            return cls(tracker, Preprocessor(PreprocessSpec(size={"height": size, "width": size}), device=device,
                                             dtype=dtype), id2label=tracker.id2label, num_labels=1, name=config.name)
        semantic_head = model_type in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
        if semantic_head:
            auto = AutoModelForSemanticSegmentation
        elif model_type in MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES:
            auto = AutoModelForUniversalSegmentation
        else:
            raise ModelLoadError(f"model {name!r} is not a segmentation model (its type is {model_type or 'unknown'!r})")
        try:
            model = auto.from_pretrained(name, **hub)
        except ImportError as exc:  # e.g. timm for the Hub's DETR checkpoints, scipy for Mask2Former
            text = short_message(exc)
            hint = " (install it with: pip install 'streamseg[timm]')" if "timm" in text.lower() else ""
            raise ModelLoadError(f"model {name!r} needs a package that is not installed: {text[:160]}{hint}") from exc
        except ValueError as exc:
            raise _load_error(name, exc, offline) from exc
        except OSError as exc:
            raise ModelLoadError(f"model {name!r} has a config but its weights could not be loaded: "
                                 f"{short_message(exc, 200)}") from exc
        except Exception as exc:  # noqa: BLE001 - what the weights' loaders raise has no common base
            raise _weights_error(name, exc) from exc
        try:
            processor = AutoImageProcessor.from_pretrained(name, **hub)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model {name!r} has no usable image-processor config "
                                 f"(preprocessor_config.json): {short_message(exc, 200)}") from exc
        tasks = supported_tasks(processor, semantic_head)
        task = tasks[0] if config.task is Task.AUTO and tasks else config.task
        if task not in tasks:
            raise ModelLoadError(f"model {name!r} cannot do {task.value} segmentation; it can do: "
                                 f"{', '.join(t.value for t in tasks) or 'nothing streamseg knows'}")
        if not semantic_head:
            if config.compile:
                raise InputError("--compile applies to semantic models (per-class logits) only")
            if config.smooth:
                raise InputError("--smooth applies to semantic models (per-class logits) only")
            if config.engine is Engine.ONNXRUNTIME:
                log.warning("--engine onnxruntime runs semantic models only; running %s in torch", config.name)
        task_inputs = oneformer_task_tokens(name, task, hf_config, hub) if model_type == "oneformer" else None
        if dtype != torch.float32 and device.type == "cpu":
            log.warning("%s on the CPU is much slower than float32 on most processors", dtype)
        model = model.to(device=device, dtype=dtype).eval()
        id2label = {int(k): str(v) for k, v in (getattr(hf_config, "id2label", None) or {}).items()}
        num_labels = max(len(id2label), int(getattr(model.config, "num_labels", 0) or 0))
        if semantic_head:
            head: Head = SemanticHead(model, id2label=id2label, num_labels=num_labels, name=config.name,
                                      smooth=config.smooth, compile=config.compile, engine=config.engine)
        else:
            head = UniversalHead(model, processor, task=task, id2label=id2label, threshold=config.threshold,
                                 mask_threshold=config.mask_threshold, overlap_threshold=config.overlap_threshold,
                                 task_inputs=None if task_inputs is None else task_inputs.to(device))
        log.info("loaded %s (%s) on %s as %s", name, task.value, device, dtype)
        spec = PreprocessSpec.from_processor(processor)
        if config.size is not None:
            spec = spec.at_size(config.size)
        return cls(head, Preprocessor(spec, device=device, dtype=dtype), id2label=id2label, num_labels=num_labels,
                   name=config.name)

    @classmethod
    def _prompted(cls, head: Head, name: str, hub: dict, config: ModelConfig, device, dtype) -> Segmenter:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(name, **hub)
        spec = PreprocessSpec.from_processor(processor)
        if config.size is not None:
            spec = spec.at_size(config.size)
        log.info("loaded %s (prompts: %s) on %s as %s", name, ", ".join(head.prompts), device, dtype)
        return cls(head, Preprocessor(spec, device=device, dtype=dtype), id2label=head.id2label,
                   num_labels=head.num_labels, name=config.name)

    # -- what the family runs ---------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        """What runs the forward (the compiled model with ``--compile``)."""
        return self.head.model

    @property
    def eager_model(self) -> torch.nn.Module:
        """The loaded torch model itself (not compiled, not exported)."""
        return self.head.eager_model

    @property
    def engine(self) -> Engine:
        """What actually runs the forward (after any fallback)."""
        return getattr(self.head, "engine", Engine.TORCH)

    # -- the three steps ------------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 ``(H, W, 3)`` RGB pictures -> normalised ``(B, 3, h, w)`` on the device, in the model's dtype."""
        return self.preprocessor(images)

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor):
        """The model's output for a pre-processed batch: logits ``(B, C, h, w)`` for semantic models,
        the full output object for instance/panoptic ones."""
        return self.head.forward(pixel_values)

    @torch.inference_mode()
    def postprocess(self, outputs, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Class ids at each source size ``(height, width)`` (-1: no segment, for instance/panoptic models)."""
        return self.head.label_maps(outputs, sizes)

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class-id maps, one per uint8 RGB picture (-1 where an instance/panoptic model found no segment)."""
        return self._in_batches(self._label_maps, list(images))

    def segment(self, frames: Sequence[Frame]) -> list[SegmentationResult]:
        """One :class:`SegmentationResult` per frame, in order."""
        return self._in_batches(self._segment_batch, list(frames))

    def reset(self) -> None:
        """Forget state carried from frame to frame (``--smooth``): call between unrelated videos."""
        self.head.reset()

    def _label_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.forward(self.preprocess(images))
        return self.postprocess(outputs, [img.shape[:2] for img in images])

    def draw_on_device(self, blender) -> bool:
        """Blend each frame's style on the model's device from now on (a :class:`~streamseg.render.device.DeviceBlender`,
        or ``None`` to stop). Semantic models only: returns whether it applies."""
        self.blender = blender if isinstance(self.head, SemanticHead) else None
        return self.blender is not None

    def _segment_batch(self, frames: list[Frame]) -> list[SegmentationResult]:
        uploads = self.preprocessor.upload([f.image for f in frames])
        outputs = self.forward(self.preprocessor.prepare(uploads))
        with torch.inference_mode():
            if self.blender is not None:  # the uploaded frames stay on the device and are drawn there
                pictures = [x[i] for x in uploads for i in range(x.shape[0])]
                return self.head.results(outputs, frames, pictures=pictures, blender=self.blender)
            return self.head.results(outputs, frames)

    def _in_batches(self, fn: Callable[[list], list], items: list) -> list:
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


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch

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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from streamseg.config import Engine, ModelConfig
from streamseg.errors import StreamsegError
from streamseg.frames import Frame, SegmentationResult

from .heads.base import Head
from .loading import load_family
from .preprocess import Preprocessor

log = logging.getLogger(__name__)


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
        """Load ``config.name`` (a Hub id or a local folder) as the family its config names
        (:data:`~streamseg.models.loading.FAMILIES`): semantic models (``AutoModelForSemanticSegmentation``:
        SegFormer, UperNet, DPT, BEiT, MobileViT...), universal ones (``AutoModelForUniversalSegmentation``:
        Mask2Former, MaskFormer, OneFormer, DETR panoptic), CLIPSeg with ``--prompt``, SAM 2 video with
        ``--point``. Raises :class:`ModelLoadError` (an :class:`InputError`) when the model cannot be found,
        is not a segmentation model, or cannot do ``config.task``.
        """
        loaded, device, dtype = load_family(config)
        return cls(loaded.head, Preprocessor(loaded.spec, device=device, dtype=dtype), id2label=loaded.id2label,
                   num_labels=loaded.num_labels, name=config.name)

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
        return self.head.engine

    @property
    def engine_text(self) -> str:
        """What runs the forward, in which precision: ``openvino bf16``, ``torch float32`` (for the summary line)."""
        precision = getattr(self.head, "precision", None) or str(self.preprocessor.dtype).removeprefix("torch.")
        return f"{self.engine.value} {precision}"

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

    def input_size_fixed(self) -> bool:
        """Whether the model sees one input size whatever the picture's (a processor that resizes to a fixed size,
        as SegFormer's does), so that it can be warmed up before the pictures' size is known."""
        try:
            shapes = {tuple(self.preprocess([np.zeros((h, w, 3), np.uint8)]).shape) for h, w in ((480, 640), (360, 640))}
        except Exception:  # noqa: BLE001 - unknown: warm up once the size is known
            return False
        return len(shapes) == 1

    def warm_up(self, size: tuple[int, int]) -> float:
        """Run the model once on a black picture of ``size`` (height, width), then forget it: what the first batch
        would convert and compile (an OpenVINO graph for that input size: seconds) is done now, before a live
        source's frames wait on it. Returns the seconds it took."""
        started = time.monotonic()
        self([np.zeros((*size, 3), np.uint8)])
        self.reset()
        return time.monotonic() - started

    def _label_maps(self, images: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.forward(self.preprocess(images))
        return self.postprocess(outputs, [img.shape[:2] for img in images])

    def draw_on_device(self, blender) -> bool:
        """Blend each frame's style on the model's device from now on (a :class:`~streamseg.render.device.DeviceBlender`,
        or ``None`` to stop). Semantic models only: returns whether it applies."""
        self.blender = blender if self.head.draws_on_device else None
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

"""Universal models (``AutoModelForUniversalSegmentation``: Mask2Former, MaskFormer, OneFormer, DETR panoptic).

Their outputs go through the model's own image processor's post-processing (on the
device), so segments equal ``pipeline("image-segmentation")``'s. OneFormer gets its task
input ("the task is panoptic") tokenised once. The forward runs in torch or, on the CPU, in
OpenVINO (the graph takes the pixels and gives the output tensors by name; the post-processing
stays transformers'); an OpenVINO failure falls back to torch with one warning.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.utils import ModelOutput

from streamseg.config import Engine, Task
from streamseg.errors import ModelLoadError, short_message
from streamseg.frames import Frame, SegmentationResult

from .base import HeadBase

log = logging.getLogger(__name__)


@dataclass
class EngineOutputs(ModelOutput):
    """A compiled engine's output tensors under the names the processors' post-processing reads."""

    class_queries_logits: torch.Tensor | None = None
    masks_queries_logits: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None

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


def oneformer_task_tokens(name: str, task: Task, hf_config: object, hub: dict) -> torch.Tensor:
    """OneFormer's task input: "the task is {task}" tokenised as its processor does, ``(1, task_seq_len)``.
    ``hub``: the loading options (``trust_remote_code``, ``local_files_only``)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **hub)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"OneFormer model {name!r} has no tokenizer for its task input: "
                             f"{short_message(exc, 200)}") from exc
    length = int(getattr(hf_config, "task_seq_len", 77))
    return tokenizer([f"the task is {task.value}"], padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt")["input_ids"]


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


class UniversalHead(HeadBase):
    """A mask-classification model (queries -> masks and classes) and its processor's post-processing."""

    def __init__(self, model: torch.nn.Module, processor: object, *, task: Task, id2label: Mapping[int, str],
                 threshold: float = 0.9, mask_threshold: float = 0.5, overlap_threshold: float = 0.5,
                 task_inputs: torch.Tensor | None = None, engine: Engine = Engine.TORCH, precision: str = "f32",
                 files_key: str | None = None) -> None:
        """``engine``: torch, or openvino (the model float32 on the CPU; ``precision`` f32 or bf16) with the graph
        cached under ``files_key`` (the model's files, :func:`~streamseg.models.engine_cache.files_key`) or, when
        None, a hash of its weights."""
        self.model = self.eager_model = model
        self.processor = processor
        self.task = Task(task)
        self.id2label = dict(id2label)
        self.threshold, self.mask_threshold, self.overlap_threshold = threshold, mask_threshold, overlap_threshold
        self.task_inputs = task_inputs  # OneFormer: the tokenised "the task is ..." (1, L)
        self._pixel_mask = "pixel_mask" in inspect.signature(model.forward).parameters
        self._float_outputs = next(model.parameters()).dtype != torch.float32
        self._compiled = self._openvino(files_key, precision) if Engine(engine) is Engine.OPENVINO else None

    @property
    def engine(self) -> Engine:
        """What actually runs the forward (after any fallback)."""
        return Engine.OPENVINO if self._compiled is not None else Engine.TORCH

    @property
    def precision(self) -> str:
        """OpenVINO's precision (``f32``, ``bf16``), or the torch model's dtype."""
        found = getattr(self._compiled, "precision", None)
        return found or str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def _openvino(self, files_key: str | None, precision: str):
        from streamseg.models.engine_cache import EngineUnavailable, Outputs, model_key
        from streamseg.models.openvino_engine import OpenVinoForward

        task = "" if self.task_inputs is None else ",".join(map(str, self.task_inputs.flatten().tolist()))
        extra = f"outputs|pixel_mask={self._pixel_mask}|task={task}"
        try:
            import hashlib

            import openvino

            key = (hashlib.blake2b(f"{files_key}|{extra}".encode(), digest_size=16).hexdigest() if files_key
                   else model_key(self.model, f"openvino {openvino.__version__}", extra))
            return OpenVinoForward(self.model, precision=precision, key=key, wrap=lambda m: Outputs(
                m, pixel_mask=self._pixel_mask, task_inputs=self.task_inputs))
        except (EngineUnavailable, ImportError) as exc:
            log.warning("%s; running the model in torch", exc)
            return None

    def forward(self, pixel_values: torch.Tensor):
        """The model's full output object for a pre-processed batch."""
        if self._compiled is not None:
            from streamseg.models.engine_cache import EngineUnavailable

            try:
                return EngineOutputs(**self._compiled.outputs(pixel_values))
            except EngineUnavailable as exc:
                log.warning("%s; running the model in torch from now on", exc)
                self._compiled = None
        kwargs = {}
        if self.task_inputs is not None:
            kwargs["task_inputs"] = self.task_inputs.expand(pixel_values.shape[0], -1)
        if self._pixel_mask:  # frames of one size fill the whole padded canvas
            kwargs["pixel_mask"] = torch.ones((pixel_values.shape[0], *pixel_values.shape[-2:]), dtype=torch.long,
                                              device=pixel_values.device)
        return self.model(pixel_values=pixel_values, **kwargs)

    def segments(self, outputs, sizes: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray | None, tuple]]:
        """``(label_map, segment_map, infos)`` per frame, through the model's own post-processing."""
        if self._float_outputs:  # post-processing in float32, as transformers does on float32 models
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

    def label_maps(self, outputs, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Class ids per pixel (-1: no segment)."""
        return [parts[0] for parts in self.segments(outputs, sizes)]

    def results(self, outputs, frames: Sequence[Frame], *, pictures=None, blender=None) -> list[SegmentationResult]:
        parts = self.segments(outputs, [f.image.shape[:2] for f in frames])
        if self.task is Task.SEMANTIC:
            return [SegmentationResult(frame=f, label_map=lm, id2label=self.id2label) for f, (lm, _, _) in zip(frames, parts)]
        return [SegmentationResult(frame=f, label_map=lm, task=self.task.value, segment_map=sm, segment_info=infos,
                                   id2label=self.id2label)
                for f, (lm, sm, infos) in zip(frames, parts)]

    def reset(self) -> None:
        """Nothing carries over between frames."""

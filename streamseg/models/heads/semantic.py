"""Semantic models (``*ForSemanticSegmentation``: SegFormer, UperNet, DPT, BEiT, MobileViT...): per-class logits.

The forward runs in eager torch, ``torch.compile`` (short batches padded to one graph), OpenVINO
or ONNX Runtime; a compiled engine that fails falls back to torch with a warning. Post-processing turns the
low-resolution logits into a class id per source pixel on the device
(:func:`~streamseg.models.tensor_ops.upsampled_argmax`), with optional temporal smoothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from streamseg.config import Engine, Task
from streamseg.errors import short_message
from streamseg.frames import Frame, SegmentationResult
from streamseg.models.tensor_ops import upsampled_argmax

from .base import HeadBase

log = logging.getLogger(__name__)


class SemanticHead(HeadBase):
    """A per-class-logits model: forward and post-processing. Owned by one thread (the inference thread)."""

    task = Task.SEMANTIC
    draws_on_device = True  # results() blends each frame's style on the device when given a blender

    def __init__(self, model: torch.nn.Module | None, *, id2label: Mapping[int, str], num_labels: int, name: str = "",
                 smooth: float = 0.0, compile: bool = False, engine: Engine = Engine.TORCH,
                 precision: str = "f32", loader: Callable[[], torch.nn.Module] | None = None,
                 files_key: str | None = None) -> None:
        """``model``: the loaded model; or None with ``loader`` (which loads it) and ``files_key`` (the key of its
        files, :func:`~streamseg.models.engine_cache.files_key`): then the openvino engine runs its cached graph
        and the model is loaded only if something needs it (a conversion, a fall back to torch)."""
        if model is None and (loader is None or files_key is None or engine is not Engine.OPENVINO or compile):
            raise ValueError("a model loaded later needs a loader, its files' key and the openvino engine")
        self._eager = model
        self._loader = loader
        self._files_key = files_key
        self._torch_run: torch.nn.Module | None = None  # torch.compile's module; None: the eager model runs
        self.id2label = dict(id2label)
        self.num_labels = num_labels
        self.name = name
        self.smooth = smooth
        self._ema: torch.Tensor | None = None  # (C, h, w) smoothed class probabilities of the last frame
        self._pad_to = 0  # compiled: the largest batch so far; smaller ones are padded to it
        self._graphed = False  # compiled with CUDA graphs: outputs live in the graph's memory until copied
        if compile:
            # On CUDA, "reduce-overhead" also records CUDA graphs for each (fixed) batch shape: one launch per forward.
            self._graphed = next(model.parameters()).device.type == "cuda"
            self._torch_run = torch.compile(model, dynamic=False, mode="reduce-overhead" if self._graphed else None)
        self._engine = Engine(engine)
        self._compiled = self._compiled_forward(self._engine, precision)  # None: torch runs it

    @property
    def eager_model(self) -> torch.nn.Module:
        """The loaded torch model itself (loaded now if it was left for later); what runs if a compiled engine
        fails."""
        if self._eager is None:
            self._eager = self._loader()
        return self._eager

    @property
    def model(self) -> torch.nn.Module:
        """What runs the forward in torch: ``torch.compile``'s module, or the eager model."""
        return self._torch_run if self._torch_run is not None else self.eager_model

    @property
    def engine(self) -> Engine:
        """What actually runs the forward (after any fallback)."""
        return self._engine if self._compiled is not None else Engine.TORCH

    @property
    def precision(self) -> str:
        """The compiled engine's precision (``f32``, ``bf16``), or the torch model's dtype."""
        found = getattr(self._compiled, "precision", None)
        return found or str(next(self.eager_model.parameters()).dtype).removeprefix("torch.")

    def _compiled_forward(self, engine: Engine, precision: str):
        from streamseg.models.engine_cache import EngineUnavailable

        try:
            if engine is Engine.ONNXRUNTIME:
                from streamseg.models.onnx_runtime import OnnxForward

                return OnnxForward(self.eager_model)
            if engine is Engine.OPENVINO:
                from streamseg.models.openvino_engine import OpenVinoForward

                if self._eager is None:
                    return OpenVinoForward(loader=lambda: self.eager_model, key=self._files_key, precision=precision)
                return OpenVinoForward(self.eager_model, precision=precision, key=self._files_key)
        except EngineUnavailable as exc:
            log.warning("%s; running the model in torch", exc)
        return None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, h, w)`` for a pre-processed batch."""
        n = pixel_values.shape[0]
        if self._torch_run is not None and self._compiled is None:  # compiled: pad short batches, not compile again
            self._pad_to = max(self._pad_to, n)
            if n < self._pad_to:
                pad = pixel_values.new_zeros((self._pad_to - n, *pixel_values.shape[1:]))
                pixel_values = torch.cat([pixel_values, pad])
        logits = self._run(pixel_values)[:n]
        # a CUDA graph's next replay overwrites its outputs: keep this batch's own copy
        return logits.clone() if self._graphed and self._torch_run is not None else logits

    def _run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            from streamseg.models.engine_cache import EngineUnavailable

            try:
                return self._compiled(pixel_values)
            except EngineUnavailable as exc:
                log.warning("%s; running the model in torch from now on", exc)
                self._compiled = None
        try:
            return self.model(pixel_values=pixel_values).logits
        except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly instead
            if self._torch_run is None:
                raise
            log.warning("torch.compile failed (%s); running the model eagerly", short_message(exc, 160))
            self._torch_run = None
            return self.model(pixel_values=pixel_values).logits

    def label_tensors(self, logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Class ids at each source size ``(height, width)``, on the device."""
        out = []
        for one, (height, width) in zip(logits, sizes):
            one = one.float()
            if self.smooth:
                one = self._smoothed(one)
            out.append(upsampled_argmax(one, height, width))
        return out

    def label_maps(self, logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Class ids at each source size ``(height, width)``, as ``post_process_semantic_segmentation`` gives."""
        return [self._host(labels) for labels in self.label_tensors(logits, sizes)]

    def _host(self, labels: torch.Tensor) -> np.ndarray:
        dtype = np.uint8 if self.num_labels <= 256 else (np.uint16 if self.num_labels <= 65536 else np.int32)
        return labels.to(torch.int32).cpu().numpy().astype(dtype, copy=False)

    def results(self, logits: torch.Tensor, frames: Sequence[Frame], *, pictures: Sequence[torch.Tensor] | None = None,
                blender=None) -> list[SegmentationResult]:
        """One result per frame. With ``blender`` (a :class:`~streamseg.render.device.DeviceBlender`) and the
        frames' ``pictures`` on the device, each result also carries its picture drawn there."""
        tensors = self.label_tensors(logits, [f.image.shape[:2] for f in frames])
        drawn: list[np.ndarray | None] = [None] * len(frames)
        if blender is not None and pictures is not None:
            from streamseg.models.tensor_ops import download

            drawn = download([blender(p[None], t[None])[0] for p, t in zip(pictures, tensors)])
        return [SegmentationResult(frame=f, label_map=self._host(t), id2label=self.id2label, drawn=d)
                for f, t, d in zip(frames, tensors, drawn)]

    def _smoothed(self, logits: torch.Tensor) -> torch.Tensor:
        """Exponential moving average of class probabilities over consecutive frames, on the device."""
        probs = logits.softmax(0)
        if self._ema is None or self._ema.shape != probs.shape:
            self._ema = probs
        else:
            self._ema = self.smooth * self._ema + (1 - self.smooth) * probs
        return self._ema

    def reset(self) -> None:
        """Forget the smoothing state (between unrelated videos)."""
        self._ema = None

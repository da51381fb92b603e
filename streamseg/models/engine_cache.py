"""What the compiled engines (:mod:`.onnx_runtime`, :mod:`.openvino_engine`) share: where their converted models
are kept on disk, the key that names one (a hash of everything the conversion depends on), and a wrapper that
gives the converters a plain tensor in and the logits out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


class EngineUnavailable(RuntimeError):
    """An engine cannot run this model here; the caller falls back to torch."""


def cache_dir(kind: str) -> Path:
    """``$STREAMSEG_CACHE/KIND`` or ``~/.cache/streamseg/KIND``."""
    root = os.environ.get("STREAMSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "streamseg")
    return Path(root) / kind


_private: dict[str, Path] = {}


def private_cache(kind: str) -> Path:
    """A temporary folder for this process's converted graphs, where the cache folder cannot be written; removed
    when the process ends."""
    if kind not in _private:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=f"streamseg-{kind}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _private[kind] = folder
    return _private[kind]


def model_key(model: torch.nn.Module, *extra: str) -> str:
    """A hash of what a converted graph depends on: the model's class, config, weights, the converting
    versions and ``extra`` (e.g. the runtime's version)."""
    import transformers

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(model).__qualname__}|{torch.__version__}|{transformers.__version__}|{'|'.join(extra)}".encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")


def files_key(folder: Path, *extra: str) -> str:
    """A hash naming a converted graph by the model's files instead of its loaded weights, so that a cached graph is
    found before (and without) loading the model: ``config.json``'s text, every weights file's name, size and
    modification time, the converting versions and ``extra``."""
    import transformers

    h = hashlib.blake2b(digest_size=16)
    h.update(f"files|{torch.__version__}|{transformers.__version__}|{'|'.join(extra)}".encode())
    for path in sorted(folder.iterdir()):
        if path.name == "config.json":
            h.update(path.read_bytes())
        elif path.suffix in WEIGHT_SUFFIXES and path.is_file():
            stat = path.stat()
            h.update(f"|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()


class Outputs(torch.nn.Module):
    """A universal model (Mask2Former, MaskFormer, OneFormer, DETR) with a plain tensor in and its output tensors out,
    as a tuple in :data:`OUTPUT_KEYS` order (those the model gives). What the run passes besides the pixels is made
    inside: a pixel mask of ones (frames of one size fill the canvas), and OneFormer's tokenised task, so the
    converted graph takes the pixels only (its key must name the task)."""

    def __init__(self, model: torch.nn.Module, *, pixel_mask: bool = False,
                 task_inputs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.pixel_mask = pixel_mask
        self.task_inputs = task_inputs
        self.keys: tuple[str, ...] = ()  # the outputs' names, known after the first call (the converter's trace)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = {}
        if self.pixel_mask:
            kwargs["pixel_mask"] = torch.ones_like(pixel_values[:, 0], dtype=torch.long)
        if self.task_inputs is not None:
            kwargs["task_inputs"] = self.task_inputs.expand(pixel_values.shape[0], -1)
        out = self.model(pixel_values=pixel_values, **kwargs)
        self.keys = tuple(k for k in OUTPUT_KEYS if getattr(out, k, None) is not None)
        return tuple(out[k] for k in self.keys)


OUTPUT_KEYS = ("class_queries_logits", "masks_queries_logits", "logits", "pred_masks", "pred_boxes")


class Logits(torch.nn.Module):
    """The model with a plain tensor in and the logits out, as exporters and converters want."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

        self.keys = ("logits",)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits

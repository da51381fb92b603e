"""Run a semantic model's forward as an ONNX graph in ONNX Runtime (``--engine onnxruntime``).

The model loaded through the Auto classes is exported once per input size
(``torch.onnx.export``) into a cache keyed by a hash of its config, weights and
the library versions, so later runs start at once. ONNX Runtime's CPU engine
fuses the graph's element-wise work into its matmuls and convolutions, which
eager torch does not (about 1.2x the eager forward of SegFormer-B0 on 2 cores).

:class:`OnnxForward` is callable like the model's forward and returns logits as a
torch tensor, so pre- and post-processing stay the same. Anything that stops the
engine (onnxruntime missing, an export or session failure) is reported by
:func:`available` / raised as :class:`EngineUnavailable`; the :class:`~streamseg.models.segmenter.Segmenter`
then logs a warning and runs the model in torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch

from streamseg.errors import short_message

from .engine_cache import EngineUnavailable, Logits, model_key, private_cache
from .engine_cache import cache_dir as engine_cache

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'streamseg[onnx]'"


def available() -> str | None:
    """``None`` when ONNX Runtime can be used, else why not (one line)."""
    for package in ("onnxruntime", "onnx"):  # onnx: the exporter writes the graph with it
        try:
            __import__(package)
        except ImportError:
            return f"{package} is not installed ({INSTALL_HINT})"
    return None


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$STREAMSEG_CACHE/onnx`` or ``~/.cache/streamseg/onnx``."""
    return engine_cache("onnx")


def export(model: torch.nn.Module, path: Path, height: int, width: int) -> None:
    """Export ``model`` (a ``*ForSemanticSegmentation``) for ``(B, 3, height, width)`` float32 input, B dynamic.

    Written to a temporary name and renamed, so a half-written graph is never loaded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, height, width)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".onnx.part", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
            torch.onnx.export(Logits(model).eval(), (example,), tmp, input_names=["pixel_values"],
                              output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OnnxForward:
    """``pixel_values (B, 3, h, w) float32 -> logits (B, C, h', w')`` through ONNX Runtime on the CPU.

    One session per input size, each made on first use from the cached graph (exported when missing).
    """

    def __init__(self, model: torch.nn.Module, *, threads: int | None = None, cache: Path | None = None) -> None:
        reason = available()
        if reason:
            raise EngineUnavailable(reason)
        if next(model.parameters()).dtype != torch.float32 or next(model.parameters()).device.type != "cpu":
            raise EngineUnavailable("the onnxruntime engine runs float32 models on the CPU")
        self._model = model
        self._threads = threads or torch.get_num_threads()
        self._cache = cache or cache_dir()
        self._key = model_key(model)
        self._sessions: dict[tuple[int, int], object] = {}

    def graph_path(self, height: int, width: int) -> Path:
        return self._cache / f"{self._key}-{height}x{width}.onnx"

    def session(self, height: int, width: int):
        """The session for ``height x width`` inputs, exporting the graph if it is not cached yet."""
        found = self._sessions.get((height, width))
        if found is not None:
            return found
        import onnxruntime as ort

        path = self.graph_path(height, width)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Its threads would otherwise spin after each op, taking the cores decode, render and encode need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            if not path.exists():
                path = self._export(height, width)
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            else:
                try:
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                except Exception as exc:  # noqa: BLE001 - a corrupt or half-copied entry: export it again
                    log.warning("the cached ONNX model %s was unreadable (%s): exporting it again", path.name,
                                short_message(exc, 120))
                    path = self._export(height, width)
                    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure means: use torch
            raise EngineUnavailable(f"ONNX export or session failed: {short_message(exc, 160)}") from exc
        self._sessions[(height, width)] = session
        return session

    def _export(self, height: int, width: int) -> Path:
        """Export the graph into the cache (or, where the cache cannot be written, a folder of this run's); its path."""
        path = self.graph_path(height, width)
        log.info("exporting the model to ONNX for %dx%d inputs: %s", width, height, path)
        try:
            export(self._model, path, height, width)
        except OSError as exc:
            self._cache = private_cache("onnx")
            log.warning("cannot write the ONNX cache in %s (%s): exporting into %s for this run only", path.parent,
                        short_message(exc, 100), self._cache)
            path = self.graph_path(height, width)
            export(self._model, path, height, width)
        return path

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        session = self.session(int(height), int(width))
        try:
            (logits,) = session.run(["logits"], {"pixel_values": pixel_values.contiguous().numpy()})
        except Exception as exc:  # noqa: BLE001
            raise EngineUnavailable(f"ONNX Runtime failed: {short_message(exc, 160)}") from exc
        return torch.from_numpy(logits)

"""Run a semantic model's forward in OpenVINO on the CPU (``--engine openvino``; ``auto`` on the CPU).

The model loaded through the Auto classes is converted once per input size
(``openvino.convert_model``, batch dynamic) and kept as OpenVINO IR in a cache keyed by a hash
of its config, weights and the library versions (``$STREAMSEG_CACHE/openvino``), so later runs
load it at once. A half-written or corrupt entry is converted again, never fatal.
OpenVINO's CPU plugin fuses the graph and, on processors with native bf16 (AVX512_BF16 or AMX),
runs it in bf16: on the 2-core build machine SegFormer-B0 at 512x512 ran at 6.6 images/s in fp32
and 10.2 in bf16, against torch's 3.2 (see ``benchmarks/README.md``).

:class:`OpenVinoForward` is callable like the model's forward and returns logits as a torch tensor,
so pre- and post-processing stay the same. What stops it (openvino missing, a conversion or
compilation failure) raises :class:`~streamseg.models.engine_cache.EngineUnavailable`; the semantic
head then logs one warning and runs the model in torch.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from streamseg.errors import short_message

from .engine_cache import EngineUnavailable, Logits, cache_dir, model_key, private_cache

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16")


def available() -> str | None:
    """``None`` when OpenVINO can be used, else why not (one line)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install openvino)"
    return None


@functools.cache
def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (OpenVINO's CPU plugin says BF16: AVX512_BF16 or AMX)."""
    if available():
        return False
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no CPU plugin: no bf16 either
        return False


@functools.cache
def _core():
    import openvino as ov

    return ov.Core()


def convert(module: torch.nn.Module, path: Path, height: int, width: int) -> None:
    """Convert ``module`` (a model wrapped in :class:`~.engine_cache.Logits` or :class:`~.engine_cache.Outputs`) for
    ``(B, 3, height, width)`` float32 input, B dynamic, into ``path`` (``.xml``, beside it ``.bin``); each output is
    named by the wrapper's ``keys`` (``logits``, ``masks_queries_logits``...). Written under temporary names and
    renamed, weights first, so an ``.xml`` on disk always has its ``.bin``."""
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.stem + ".", suffix=".part", dir=path.parent))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notices
            graph = ov.convert_model(module.eval(), example_input=torch.zeros(1, 3, height, width),
                                     input=[ov.PartialShape([-1, 3, height, width])])
        for output, key in zip(graph.outputs, module.keys, strict=True):
            output.get_tensor().set_names({key})
        ov.save_model(graph, tmp / "model.xml", compress_to_fp16=False)
        os.replace(tmp / "model.bin", path.with_suffix(".bin"))
        os.replace(tmp / "model.xml", path)
    finally:
        for leftover in tmp.glob("*"):
            leftover.unlink(missing_ok=True)
        tmp.rmdir()


def ir_damage(xml: Path) -> str | None:
    """Why the OpenVINO IR at ``xml`` (with its ``.bin``) cannot be whole, or ``None``: the XML must be one
    ``<net>`` to its end, and the weights file as long as the constants it lists."""
    try:
        text = xml.read_text(encoding="utf-8", errors="replace")
        size = xml.with_suffix(".bin").stat().st_size
    except OSError as exc:
        return short_message(exc, 80)
    if not (text.lstrip().startswith("<?xml") and "<net " in text and text.rstrip().endswith("</net>")):
        return "its XML is cut short or is not an OpenVINO model"
    end = max((int(o) + int(n) for o, n in re.findall(r'offset="(\d+)"\s+size="(\d+)"', text)), default=0)
    if end > size:
        return f"its weights file holds {size} of {end} bytes"
    return None


class OpenVinoForward:
    """``pixel_values (B, 3, h, w) float32 -> logits (B, C, h', w')`` through OpenVINO on the CPU, in
    ``precision`` (``"bf16"`` or ``"f32"``). One compiled model per input size, made on first use from the
    cached IR (converted when missing or unreadable).

    ``wrap`` makes the module converted from the model (:class:`~.engine_cache.Logits`, or for universal models
    :class:`~.engine_cache.Outputs`); :meth:`outputs` gives every output by name, calling it the first one."""

    def __init__(self, model: torch.nn.Module | None = None, *, precision: str = "f32", threads: int | None = None,
                 cache: Path | None = None, loader: Callable[[], torch.nn.Module] | None = None,
                 key: str | None = None, wrap: Callable[[torch.nn.Module], torch.nn.Module] = Logits) -> None:
        reason = available()
        if reason:
            raise EngineUnavailable(reason)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
        if model is None and (loader is None or key is None):
            raise ValueError("give the model, or a loader and the key of its files (engine_cache.files_key)")
        if model is not None and (next(model.parameters()).dtype != torch.float32
                                  or next(model.parameters()).device.type != "cpu"):
            raise EngineUnavailable("the openvino engine runs float32 models on the CPU")
        import openvino as ov

        self.precision = precision
        self._model = model
        self._wrap = wrap
        self._loader = loader  # called only to convert: a cached graph runs without loading the model at all
        self._threads = threads  # None: torch's count at each call, so the thread tuner's choice holds here too
        self._cache = cache or cache_dir("openvino")
        self._key = key or model_key(model, f"openvino {ov.__version__}")
        self._compiled: dict[tuple[int, int, int], object] = {}
        self.convert_seconds = 0.0  # spent converting this run (0: every size came from the cache)

    def graph_path(self, height: int, width: int) -> Path:
        return self._cache / f"{self._key}-{height}x{width}.xml"

    def _convert(self, height: int, width: int, *, unreadable: str | None = None) -> None:
        """Convert for ``height x width`` into the cache (or, where it cannot be written, a folder of this run's),
        with one warning saying so and why (``unreadable``: the cached entry it replaces)."""
        path = self.graph_path(height, width)
        started = time.monotonic()
        if self._model is None:
            self._model = self._loader()
        where = f"cached in {path.parent}"
        try:
            convert(self._wrap(self._model), path, height, width)
        except OSError as exc:  # a read-only, full or missing cache folder: this run converts into its own
            self._cache = private_cache("openvino")
            where = (f"the cache in {path.parent} cannot be written ({short_message(exc, 100)}): kept in {self._cache} "
                     "for this run only")
            convert(self._wrap(self._model), self.graph_path(height, width), height, width)
        took = time.monotonic() - started
        self.convert_seconds += took
        if unreadable:
            log.warning("the cached OpenVINO model %s was unreadable (%s): converted it again in %.1f s (%s)",
                        path.name, unreadable, took, where)
        else:
            log.warning("converted the model to OpenVINO for %dx%d inputs in %.1f s (%s)", width, height, took, where)

    def _compile(self, height: int, width: int, threads: int):
        """Compiled from the file, so that OpenVINO's blob cache (``CACHE_DIR``: 0.06 s instead of 0.17 s for
        SegFormer-B0) serves later starts; without it where the blob cache fails (a read-only or full folder, a
        blob another process is writing)."""
        settings = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads,
                    "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        path = str(self.graph_path(height, width))
        try:
            return _core().compile_model(path, "CPU", {**settings, "CACHE_DIR": str(self._cache / "compiled")})
        except Exception:  # noqa: BLE001 - the blob cache's trouble is not the model's: try once without it
            return _core().compile_model(path, "CPU", settings)

    def compiled(self, height: int, width: int):
        """The compiled model for ``height x width`` inputs on the current thread count (``threads``, or torch's:
        the tuner changes it between batches; each count is compiled once). The IR comes from the cache, or is
        converted (again, if the cached entry cannot be read)."""
        threads = self._threads or torch.get_num_threads()
        found = self._compiled.get((height, width, threads))
        if found is not None:
            return found
        try:
            path = self.graph_path(height, width)
            if not path.exists():
                self._convert(height, width)
                compiled = self._compile(height, width, threads)
            else:
                try:
                    damage = ir_damage(path)  # checked first: OpenVINO would try every other format's reader on it
                    if damage:
                        raise ValueError(damage)
                    compiled = self._compile(height, width, threads)
                except Exception as exc:  # noqa: BLE001 - a corrupt or half-copied entry: convert it again
                    self._convert(height, width, unreadable=short_message(exc, 120))
                    compiled = self._compile(height, width, threads)
        except EngineUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any converter or plugin failure means: use torch
            raise EngineUnavailable(f"OpenVINO conversion or compilation failed: {short_message(exc, 160)}") from exc
        self._compiled[(height, width, threads)] = compiled
        return compiled

    def outputs(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of the graph for a batch, by name (a graph converted before outputs were named: ``logits``)."""
        height, width = pixel_values.shape[-2:]
        compiled = self.compiled(int(height), int(width))
        try:
            result = compiled(pixel_values.contiguous().numpy())  # type: ignore[operator]
            found = {}
            for port in compiled.outputs:  # type: ignore[attr-defined]
                names = port.get_names()
                found[min(names) if names else "logits"] = torch.from_numpy(result[port].copy())
        except Exception as exc:  # noqa: BLE001
            raise EngineUnavailable(f"OpenVINO failed: {short_message(exc, 160)}") from exc
        return found

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return next(iter(self.outputs(pixel_values).values()))

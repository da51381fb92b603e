"""Loading any Hugging Face segmentation model: a table of model families, each with the model types it
takes and how it becomes a :class:`~streamseg.models.heads.base.Head`; the device and precision; and one-line
errors for every way loading fails (no such folder, an unreachable Hub, damaged weights, a missing package).

A new family is one :class:`Family` row in :data:`FAMILIES` and a head in :mod:`streamseg.models.heads`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from streamseg.config import DType, Engine, ModelConfig, Task
from streamseg.errors import InputError, ModelLoadError, short_message

from .heads.base import Head
from .preprocess import PreprocessSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loading:
    """What every family's loader is given: the model's name (a Hub id or a resolved folder), the Hub options
    (``trust_remote_code``, ``local_files_only``), the run's model config, its transformers config, and where
    the model runs."""

    name: str
    hub: dict
    config: ModelConfig
    hf_config: object
    model_type: str
    device: torch.device
    dtype: torch.dtype
    offline: str | None  # why the Hub cannot be reached (then the local cache only), or None
    engine: Engine = Engine.TORCH  # what runs a semantic model's forward (resolved: never AUTO)
    precision: str = "f32"  # the openvino engine's inference precision (f32 or bf16)


@dataclass(frozen=True)
class Loaded:
    """A family's head, what its pre-processing is, and its classes."""

    head: Head
    spec: PreprocessSpec
    id2label: dict[int, str]
    num_labels: int
    what: str  # for the log line: the task, the prompts...


@dataclass(frozen=True)
class Family:
    """A model family: the ``model_type`` values it takes, and how a model of it becomes a head.
    ``needs``: the :class:`~streamseg.config.ModelConfig` field only this family can use (``prompts``, ``points``)."""

    name: str
    types: Callable[[], Collection[str]]
    load: Callable[[Loading], Loaded]
    needs: str | None = None


def _semantic_types() -> Collection[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

    return MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES


def _universal_types() -> Collection[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES

    return MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES


def _prompt_types() -> Collection[str]:
    return ("clipseg",)


def _point_types() -> Collection[str]:
    from .heads.point_tracking import VIDEO_TYPES

    return VIDEO_TYPES


def _load_prompts(ld: Loading) -> Loaded:
    from .heads.prompts import load_prompt_head

    head = load_prompt_head(ld.name, ld.hub, ld.config, ld.device, ld.dtype)
    return Loaded(head, _spec(ld, _processor(ld)), head.id2label, head.num_labels, f"prompts: {', '.join(head.prompts)}")


def _load_points(ld: Loading) -> Loaded:
    from .heads.point_tracking import load_point_head

    head = load_point_head(ld.name, ld.hub, ld.config, ld.device, ld.dtype, ld.model_type)
    size = head.image_size  # SAM2's processor: a square, ImageNet's mean and std (torch, not torchvision)
    return Loaded(head, PreprocessSpec(size={"height": size, "width": size}), head.id2label, 1, "point tracking")


def _load_semantic(ld: Loading) -> Loaded:
    from .heads.semantic import SemanticHead

    processor = _segformer_processor(ld) or _processor(ld)
    spec = _spec(ld, processor)
    task = _task(ld, [Task.SEMANTIC])

    def load() -> torch.nn.Module:
        from transformers import AutoModelForSemanticSegmentation

        return _auto_model(ld, AutoModelForSemanticSegmentation)

    key = _openvino_files_key(ld)
    model = None if key is not None and _openvino_cached(key, spec) else load()
    id2label, num_labels = _labels(ld, model)
    head = SemanticHead(model, id2label=id2label, num_labels=num_labels, name=ld.config.name,
                        smooth=ld.config.smooth, compile=ld.config.compile, engine=ld.engine,
                        precision=ld.precision, loader=load, files_key=key)
    return Loaded(head, spec, id2label, num_labels, task.value)


def _model_folder(ld: Loading) -> Path | None:
    """The folder that holds the model's files: the local folder, or the Hub's cached snapshot; None if unknown."""
    folder = Path(ld.name)
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ld.name, "config.json")
    except Exception:  # noqa: BLE001 - not a repo id, no cache
        return None
    return Path(found).parent if isinstance(found, str) else None


_SEGFORMER_PROCESSORS = frozenset({"SegformerImageProcessor", "SegformerImageProcessorFast", "SegformerImageProcessorPil",
                                   "SegformerFeatureExtractor"})


def _segformer_processor(ld: Loading) -> object | None:
    """SegFormer's image processor settings read from its ``preprocessor_config.json`` as transformers reads them
    (an integer size is a square; the rest defaults as SegformerImageProcessor does): importing transformers'
    processors takes 2 s of a 2-core machine's start-up. None for any other processor (then transformers reads it)."""
    import json
    from types import SimpleNamespace

    folder = _model_folder(ld)
    try:
        data = json.loads((folder / "preprocessor_config.json").read_text()) if folder else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or (data.get("image_processor_type") or data.get("feature_extractor_type")) \
            not in _SEGFORMER_PROCESSORS:
        return None
    size = data.get("size", {"height": 512, "width": 512})
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if not (isinstance(size, dict) and set(size) == {"height", "width"}):
        return None
    return SimpleNamespace(size=size, resample=data.get("resample", 2), do_resize=data.get("do_resize", True),
                           do_rescale=data.get("do_rescale", True),
                           rescale_factor=data.get("rescale_factor", 1 / 255),
                           do_normalize=data.get("do_normalize", True),
                           image_mean=data.get("image_mean", [0.485, 0.456, 0.406]),
                           image_std=data.get("image_std", [0.229, 0.224, 0.225]))


def _openvino_files_key(ld: Loading) -> str | None:
    """For the openvino engine, the key of the model's files (a local folder, or the Hub's cached snapshot), so
    that its converted graph is found without loading the model; None when they cannot be found."""
    if ld.engine is not Engine.OPENVINO:
        return None
    from .engine_cache import files_key

    folder = _model_folder(ld)
    if folder is None:
        return None
    try:
        import openvino

        return files_key(folder, f"openvino {openvino.__version__}")
    except (OSError, ImportError):
        return None


def _openvino_cached(key: str, spec: PreprocessSpec) -> bool:
    """Whether the graph for a fixed-size model's input is in the cache (then the model need not be loaded)."""
    size = spec.size
    if not (size.get("height") and size.get("width")) or spec.keep_aspect_ratio or spec.crop_size:
        return False  # the input size follows the source's: known at the first frame only
    from .engine_cache import cache_dir

    height, width = spec.output_size(int(size["height"]), int(size["width"]))
    return (cache_dir("openvino") / f"{key}-{height}x{width}.xml").is_file()


def _load_universal(ld: Loading) -> Loaded:
    from transformers import AutoModelForUniversalSegmentation

    from .heads.universal import UniversalHead, oneformer_task_tokens, supported_tasks

    config = ld.config
    model, processor = _auto_model(ld, AutoModelForUniversalSegmentation), _processor(ld)
    task = _task(ld, supported_tasks(processor, False))
    if config.compile:
        raise InputError("--compile applies to semantic models (per-class logits) only")
    if config.smooth:
        raise InputError("--smooth applies to semantic models (per-class logits) only")
    tokens = oneformer_task_tokens(ld.name, task, ld.hf_config, ld.hub) if ld.model_type == "oneformer" else None
    id2label, num_labels = _labels(ld, model)
    head = UniversalHead(model, processor, task=task, id2label=id2label, threshold=config.threshold,
                         mask_threshold=config.mask_threshold, overlap_threshold=config.overlap_threshold,
                         task_inputs=None if tokens is None else tokens.to(ld.device), engine=ld.engine,
                         precision=ld.precision, files_key=_openvino_files_key(ld))
    return Loaded(head, _spec(ld, processor), id2label, num_labels, task.value)


FAMILIES: tuple[Family, ...] = (
    Family("text prompts (CLIPSeg)", _prompt_types, _load_prompts, needs="prompts"),
    Family("point tracking (SAM 2 video)", _point_types, _load_points, needs="points"),
    Family("semantic", _semantic_types, _load_semantic),
    Family("universal (Mask2Former, MaskFormer, OneFormer, DETR)", _universal_types, _load_universal),
)
_NEEDS_TEXT = {  # a field only one family can use -> the one-line error for a model of another family
    "prompts": "--prompt needs a model that takes text (CLIPSeg, e.g. --model CIDAS/clipseg-rd64-refined)",
    "points": "--point needs a model that tracks what it is shown (SAM 2 video: --model facebook/sam2.1-hiera-tiny, "
              "or EdgeTAM)",
}


def load_family(config: ModelConfig) -> tuple[Loaded, torch.device, torch.dtype]:
    """Find ``config.name`` (a Hub id or a local folder), pick its family from :data:`FAMILIES` by its
    ``model_type``, and load it on its device. Raises :class:`ModelLoadError` (an :class:`InputError`)."""
    from transformers import AutoConfig

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
        raise ModelLoadError(f"model folder not found: {name}{_near(path)}")
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    offline = None if path.exists() else hub_problem()  # unreachable: the local cache only, no retries
    hub = {"trust_remote_code": config.trust_remote_code, **({"local_files_only": True} if offline else {})}
    try:
        hf_config = AutoConfig.from_pretrained(name, **hub)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc, offline) from exc
    model_type = getattr(hf_config, "model_type", "") or ""
    family = next((f for f in FAMILIES if model_type in f.types()), None)
    for needs, text in _NEEDS_TEXT.items():
        if getattr(config, needs) and (family is None or family.needs != needs):
            raise ModelLoadError(f"{text}; {config.name!r} is a {model_type or 'unknown'} model")
    if family is None:
        raise ModelLoadError(f"model {name!r} is not a segmentation model (its type is {model_type or 'unknown'!r})")
    engine, precision = resolve_engine(config, device, family=family)
    if engine is Engine.OPENVINO:  # converted from float32; OpenVINO runs it in its own precision
        dtype = torch.float32
    elif dtype != torch.float32 and device.type == "cpu":
        log.warning("%s on the CPU is much slower than float32 on most processors", dtype)
    loaded = family.load(Loading(name, hub, config, hf_config, model_type, device, dtype, offline, engine, precision))
    log.info("loaded %s (%s) on %s as %s", name, loaded.what, device, dtype)
    return loaded, device, dtype


# -- what the families share -----------------------------------------------------------------
def _auto_model(ld: Loading, auto) -> torch.nn.Module:
    """The model through its Auto class, on its device and in its precision, with one-line errors."""
    from .timm_resnet import native_resnet

    name, extra = ld.name, {}
    native = native_resnet(ld.hf_config)
    if native is not None:  # the Hub's DETR: a timm ResNet, run as transformers' own (no timm needed)
        extra = {"config": native[0], "key_mapping": native[1]}
        log.info("%s: its timm ResNet backbone runs as transformers' ResNet", name)
    try:
        model = auto.from_pretrained(name, **ld.hub, **extra)
    except ImportError as exc:  # e.g. scipy for Mask2Former, timm for a backbone other than a plain ResNet
        text = short_message(exc)
        hint = (" (its backbone is a timm network other than a plain ResNet: install timm with a torchvision that "
                "matches your torch)") if "timm" in text.lower() else ""
        raise ModelLoadError(f"model {name!r} needs a package that is not installed: {text[:160]}{hint}") from exc
    except ValueError as exc:
        raise _load_error(name, exc, ld.offline) from exc
    except OSError as exc:
        raise ModelLoadError(f"model {name!r} has a config but its weights could not be loaded: "
                             f"{short_message(exc, 200)}") from exc
    except Exception as exc:  # noqa: BLE001 - what the weights' loaders raise has no common base
        raise _weights_error(name, exc) from exc
    return model.to(device=ld.device, dtype=ld.dtype).eval()


def _processor(ld: Loading) -> object:
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(ld.name, **ld.hub)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {ld.name!r} has no usable image-processor config "
                             f"(preprocessor_config.json): {short_message(exc, 200)}") from exc


def _spec(ld: Loading, processor: object) -> PreprocessSpec:
    spec = PreprocessSpec.from_processor(processor)
    return spec if ld.config.size is None else spec.at_size(ld.config.size)


def _task(ld: Loading, tasks: list[Task]) -> Task:
    """``--task`` (auto: the first the model supports) when the model can do it."""
    task = tasks[0] if ld.config.task is Task.AUTO and tasks else ld.config.task
    if task not in tasks:
        raise ModelLoadError(f"model {ld.name!r} cannot do {task.value} segmentation; it can do: "
                             f"{', '.join(t.value for t in tasks) or 'nothing streamseg knows'}")
    return task


def _labels(ld: Loading, model: torch.nn.Module | None) -> tuple[dict[int, str], int]:
    id2label = {int(k): str(v) for k, v in (getattr(ld.hf_config, "id2label", None) or {}).items()}
    config = ld.hf_config if model is None else model.config
    return id2label, max(len(id2label), int(getattr(config, "num_labels", 0) or 0))


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


def resolve_engine(config: ModelConfig, device: torch.device, *, family: Family) -> tuple[Engine, str]:
    """What runs the forward and, for OpenVINO, in which precision: ``auto`` is OpenVINO on the CPU for semantic,
    instance and panoptic models when it is installed (not with ``--compile``), else torch; OpenVINO's precision is
    bf16 where the CPU has native bf16 and ``--dtype`` is auto or bfloat16, else f32. An engine named for a model
    it cannot run (ONNX Runtime: semantic models only; text prompts and point tracking: torch only) gets one
    warning and torch."""
    from . import openvino_engine

    runs = {Engine.TORCH} | ({Engine.OPENVINO, Engine.ONNXRUNTIME} if family.load is _load_semantic else set()) \
        | ({Engine.OPENVINO} if family.load is _load_universal else set())
    engine = config.engine
    if engine is Engine.AUTO:
        engine = (Engine.OPENVINO if Engine.OPENVINO in runs and device.type == "cpu" and not config.compile
                  and openvino_engine.available() is None else Engine.TORCH)
    elif engine not in runs:
        log.warning("--engine %s does not run %s models; running %s in torch", engine.value, family.name, config.name)
        engine = Engine.TORCH
    elif engine is Engine.OPENVINO and device.type != "cpu":
        log.warning("--engine openvino runs on the CPU; running the model in torch on %s", device)
        engine = Engine.TORCH
    precision = "f32"
    if engine is Engine.OPENVINO and config.dtype in (DType.AUTO, DType.BFLOAT16):
        native = openvino_engine.native_bf16()
        if config.dtype is DType.BFLOAT16 and not native:
            log.warning("this CPU has no native bf16: OpenVINO runs the model in float32")
        precision = "bf16" if native else "f32"
    elif engine is Engine.OPENVINO and config.dtype is DType.FLOAT16:
        log.warning("OpenVINO on the CPU runs float16 models in float32")
    return engine, precision


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 on the CPU."""
    if dtype is DType.AUTO:
        return torch.float16 if device.type == "cuda" else torch.float32
    return {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}[dtype]


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a folder, and so is ``DIR/name`` where
    ``DIR`` is a folder here (a typo in a local model's name, not a Hub miss)."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or (name.count("/") == 1 and Path(name.split("/")[0]).expanduser().is_dir()))


def _near(path: Path) -> str:
    """``" (did you mean NAME?)"`` for the closest name in the folder above, when there is one."""
    import difflib

    try:
        names = [p.name for p in path.parent.iterdir() if p.is_dir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1)
    return f" (did you mean {path.parent / close[0]}?)" if close else ""


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



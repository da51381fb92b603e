"""streamseg: real-time video segmentation with Hugging Face models.

The Python API, for people who bring their own frames::

    from streamseg import ModelConfig, Segmenter, Renderer, RenderConfig

    segmenter = Segmenter.load(ModelConfig(name="nvidia/segformer-b0-finetuned-ade-512-512"))
    label_maps = segmenter([rgb_uint8_frame, ...])          # one (H, W) class-id map per frame

See the README's "Python API" section.
"""

__version__ = "0.1.0"

# OpenCV must load before PyAV: PyAV's wheels bundle their own libxcb, and an OpenCV (Qt)
# window opened after it hangs forever (PyAV-Org/PyAV#978, #1050).
import cv2  # noqa: E402,F401

from .config import DEFAULT_MODEL, DropPolicy, DType, InputConfig, ModelConfig, OutputConfig, RenderConfig, RunConfig, Style, Task  # noqa: E402
from .errors import InputError, ModelLoadError, OutputError, SourceError, StreamsegError  # noqa: E402
from .frames import Frame, Segment, SegmentationResult  # noqa: E402
from .lazy import lazy_exports  # noqa: E402

__all__ = [
    "DEFAULT_MODEL", "DType", "DropPolicy", "Frame", "InputConfig", "InputError", "ModelConfig", "ModelLoadError",
    "OutputConfig", "OutputError", "RenderConfig", "Renderer", "Run", "RunConfig", "Segment", "SegmentationResult",
    "Segmenter", "SourceError", "StreamsegError", "Style", "Task", "__version__", "open_source",
]


__getattr__ = lazy_exports(__name__, {  # torch and transformers load only when the model or renderer is asked for
    "Segmenter": "models.segmenter", "Renderer": "render.renderer", "Run": "app", "open_source": "sources.open",
})

"""Models: loading any Hugging Face segmentation model (:mod:`.segmenter`), pre-processing on the device
(:mod:`.preprocess`), engines (:mod:`.openvino_engine`, :mod:`.onnx_runtime`, sharing :mod:`.engine_cache`), one head per family (:mod:`.heads`) and track ids
(:mod:`.tracking`).

Imports only the core.
"""

from streamseg.lazy import lazy_exports

__all__ = ["Head", "SegmentTracker", "Segmenter", "Tracked"]
__getattr__ = lazy_exports(__name__, {
    "Head": "segmenter", "SegmentTracker": "tracking", "Segmenter": "segmenter", "Tracked": "tracking",
})

"""Drawing results on frames: the renderer (:mod:`.renderer`) and, on the model's device, the blender
(:mod:`.device`).

Imports the core and :mod:`streamseg.models.tracking` (instance colours follow track ids).
"""

from streamseg.lazy import lazy_exports

__all__ = ["DeviceBlender", "Renderer", "palette"]
__getattr__ = lazy_exports(__name__, {"DeviceBlender": "device", "Renderer": "renderer", "palette": "renderer"})

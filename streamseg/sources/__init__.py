"""Where frames come from: video files and network streams (:mod:`.video`), streams that come back
(:mod:`.reconnect`), cameras (:mod:`.camera`), stills (:mod:`.stills`); :func:`open_source` picks one, and
:mod:`.names` tells what an input is by its name.

Imports only the core.
"""

from streamseg.lazy import lazy_exports

__all__ = ["CameraSource", "ImageSource", "ReconnectingSource", "VideoSource", "is_url", "open_source", "safe_name"]
__getattr__ = lazy_exports(__name__, {
    "CameraSource": "camera", "ImageSource": "stills", "ReconnectingSource": "reconnect", "VideoSource": "video",
    "is_url": "names", "open_source": "open", "safe_name": "names",
})

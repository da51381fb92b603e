"""Where results go: planned once (:mod:`.plan`), written safely (:mod:`.files`): video files (:mod:`.video`,
with :mod:`.audio`), images (:mod:`.images`), a window (:mod:`.window`), JSON Lines and mask PNGs
(:mod:`.exports`), network streams (:mod:`.publish`).

Imports the core, :mod:`streamseg.pipeline` (a channel), :mod:`streamseg.sources` (names) and render.
"""

from streamseg.lazy import lazy_exports

__all__ = ["ImageSink", "JsonLinesExport", "MaskPngExport", "NullSink", "Publisher", "SegmentedVideoSink", "TeeSink",
           "VideoFileSink", "WindowSink", "open_outputs", "plan_routes"]
__getattr__ = lazy_exports(__name__, {
    "ImageSink": "images", "JsonLinesExport": "exports", "MaskPngExport": "exports", "NullSink": "sinks",
    "Publisher": "publish", "SegmentedVideoSink": "video", "TeeSink": "sinks", "VideoFileSink": "video",
    "WindowSink": "window", "open_outputs": "plan", "plan_routes": "plan",
})

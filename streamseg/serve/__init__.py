"""The live view (``--serve``): the HTTP server (:mod:`.server`), its page (:mod:`.page`), ``/metrics`` and
``/healthz`` (:mod:`.metrics`).

Imports the core, :mod:`streamseg.pipeline` (figures) and outputs.
"""

from streamseg.lazy import lazy_exports

__all__ = ["PreviewServer", "parse_address"]
__getattr__ = lazy_exports(__name__, {"PreviewServer": "server", "parse_address": "server"})

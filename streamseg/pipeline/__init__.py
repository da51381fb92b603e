"""The threads of a run and what they share: capture, inference and render threads over bounded channels
(:mod:`.pipeline`, :mod:`.channel`), the live batch size (:mod:`.live_batch`), which frames the model runs on
(:mod:`.schedule`), the thread budget (:mod:`.threads`) and what a run measures (:mod:`.stats`).

Imports only the core (config, errors, frames, roles, closing): the pipeline knows roles, not models or files.
"""

from streamseg.lazy import lazy_exports

__all__ = ["END", "Channel", "EveryNth", "LiveBatch", "Pipeline", "Route", "RunStats", "ThreadTuner"]
__getattr__ = lazy_exports(__name__, {
    "END": "channel", "Channel": "channel", "EveryNth": "schedule", "LiveBatch": "live_batch", "Pipeline": "pipeline",
    "Route": "pipeline", "RunStats": "stats", "ThreadTuner": "threads",
})

"""Runs on Ray: ``streamseg batch`` (:mod:`.batch`, many files) and ``streamseg fleet`` (:mod:`.fleet`, live
sources on workers: :mod:`.fleet_plan`, :mod:`.fleet_worker`, :mod:`.fleet_view`).

Imports :mod:`streamseg.app` and everything below it; only the CLI imports this folder.
"""

from streamseg.lazy import lazy_exports

__all__ = ["BatchConfig", "Fleet", "FleetConfig", "run_batch"]
__getattr__ = lazy_exports(__name__, {
    "BatchConfig": "batch", "Fleet": "fleet", "FleetConfig": "fleet_plan", "run_batch": "batch",
})

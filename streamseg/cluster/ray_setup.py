"""Ray for ``batch`` and ``fleet``: importing it with a one-line error when it is missing, the workers' flags,
and joining or starting a cluster that has what they ask for."""

from __future__ import annotations

import logging
import math
import os

from streamseg.errors import InputError, short_message

INSTALL_HINT = "pip install 'streamseg[ray]'"


def import_ray(command: str):
    """The ``ray`` module; an :class:`InputError` naming ``command`` and the install line when it is missing."""
    try:
        import ray
    except ImportError:
        raise InputError(f"{command} runs on Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_workers(workers: int, gpus_per_worker: float, cpus_per_worker: float) -> None:
    """``--workers``, ``--gpus-per-worker`` and ``--cpus-per-worker`` (batch and fleet). Raises InputError."""
    if workers < 1:
        raise InputError(f"--workers must be 1 or more, got {workers}")
    for name, value in (("gpus-per-worker", gpus_per_worker), ("cpus-per-worker", cpus_per_worker)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"invalid --{name} {value}: expected a number, 0 or more")


def init_ray(ray, address: str | None, gpus_per_worker: float, workers: int, cpus_per_worker: float) -> None:
    """Join the Ray cluster at ``address`` (or start a local one) and check it has what the workers ask for.
    Raises InputError. How loud Ray is (its loggers, its C++ log level) is the command line's choice."""
    if not ray.is_initialized():
        # No --ray: a new local instance ("local"), even if this machine is already part of a cluster.
        kwargs = {"address": address} if address else {
            "address": "local", "num_cpus": max(os.cpu_count() or 1, int(workers * cpus_per_worker))}
        try:
            ray.init(log_to_driver=False, logging_level=logging.WARNING, include_dashboard=False,
                     configure_logging=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot start or join Ray{' at ' + address if address else ''}: "
                             f"{short_message(exc, 200)}") from exc
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    if gpus_per_worker and gpus < gpus_per_worker:
        raise InputError(f"--gpus-per-worker {gpus_per_worker:g} asks for GPUs, but the Ray cluster has "
                         f"{gpus:g}: use --gpus-per-worker 0 (CPU) or a cluster with GPUs")
    if resources.get("CPU", 0) < cpus_per_worker:
        raise InputError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs; a worker needs {cpus_per_worker:g}")

"""``streamseg fleet``'s configuration and its pure decisions: source names, who runs what, where files go.

Nothing here touches Ray, a model or a file; the driver (:mod:`streamseg.cluster.fleet`) and the workers
(:mod:`streamseg.cluster.fleet_worker`) share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamseg.config import InputConfig, ModelConfig, OutputConfig, RenderConfig
from streamseg.errors import InputError
from streamseg.outputs.plan import OutputKind, RoutePlan

RECORDING = "rec.mp4"  # OUTDIR/NAME/rec-000.mp4, rec-001.mp4 ... (and rec-000.jsonl ... with --json)
DEFAULT_SEGMENT_TIME = 300.0  # a fleet always rotates its recordings: every 5 minutes unless --segment-time


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """One ``streamseg fleet`` job. ``model``, ``render``, ``input`` and ``outputs`` are the main command's
    (``outputs`` for its settings: segment time, JSON masks, encoder; the paths are the fleet's own)."""

    sources: tuple[str, ...]
    outdir: Path
    model: ModelConfig = ModelConfig()
    forward_threads: int | None = None  # --threads N: each worker's forward threads (None: its CPUs, tuned)
    render: RenderConfig = RenderConfig()
    input: InputConfig = InputConfig()
    outputs: OutputConfig = field(default_factory=lambda: OutputConfig(output=Path(RECORDING),
                                                                       segment_time=DEFAULT_SEGMENT_TIME))
    batch_size: int = 4
    drop_policy: str | None = None
    json_export: bool = False
    masks_export: bool = False
    ray_address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_restarts: int = -1  # Ray restarts of a worker that died (-1: always)
    serve: str | None = None
    serve_token: str | None = None
    serve_hosts: tuple[str, ...] = ()
    orphan_timeout: float = 20.0  # a worker that hears nothing from its driver this long stops its sources
    resume_timeout: float = 10.0  # a worker that answers nothing this long is killed (Ray restarts it)
    move_after: float = 15.0  # a lost worker's sources wait this long for Ray to restart it, then move
    relay_fps: float = 5.0  # --serve: frames per second fetched from a worker per watched source, at most
    relay_width: int = 640  # ... scaled down to this width

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise InputError("give the live sources to record: URLs, camera:N, or text files of them")
        from .ray_setup import check_workers

        check_workers(self.workers, self.gpus_per_worker, self.cpus_per_worker)
        if self.max_restarts < -1:
            raise InputError(f"invalid --max-restarts {self.max_restarts}: expected -1 (always) or 0 or more")
        if self.batch_size < 1:
            raise InputError(f"invalid batch size {self.batch_size}: expected 1 or more")
        if self.outputs.segment_time is None:
            raise InputError("a fleet rotates its recordings: --segment-time must be set")

    @property
    def threads(self) -> int:
        """Each worker's forward threads: its CPUs."""
        return max(1, int(self.cpus_per_worker))


def fleet_names(specs: Sequence[str]) -> list[str]:
    """Each source's folder name: its readable name (``cam1-s``), with 6 hex digits of the whole spec added when
    two sources would share it. The same spec always gets the same name, in any order or company it is given,
    so a rerun's files go on in the same folder."""
    import hashlib
    from collections import Counter

    from streamseg.outputs.plan import source_name

    bases = [source_name(spec) for spec in specs]
    repeated = Counter(bases)
    return [base if repeated[base] == 1 else f"{base}-{hashlib.sha1(spec.encode()).hexdigest()[:6]}"
            for base, spec in zip(bases, specs)]


def spread(names: Sequence[str], workers: Sequence[str], current: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Sources over workers by count (the first ``len(names) % len(workers)`` fullest get one more), moving as
    few as possible: a source stays on its worker while that worker is in ``workers`` and within its share.
    Deterministic: the same inputs give the same answer."""
    if not workers:
        return {}
    base, extra = divmod(len(names), len(workers))
    wanted = set(names)
    kept = {w: [s for s in current.get(w, ()) if s in wanted] for w in workers}
    by_load = sorted(workers, key=lambda w: (-len(kept[w]), list(workers).index(w)))
    share = {w: base + (1 if k < extra else 0) for k, w in enumerate(by_load)}
    placed: dict[str, list[str]] = {}
    taken: set[str] = set()
    for w in workers:
        placed[w] = [s for s in kept[w] if s not in taken][:share[w]]
        taken.update(placed[w])
    for s in names:
        if s in taken:
            continue
        w = min(workers, key=lambda w: (len(placed[w]) - share[w], list(workers).index(w)))
        placed[w].append(s)
        taken.add(s)
    return placed


def source_plan(spec: str, name: str, outdir: Path, *, json_export: bool, masks_export: bool,
                first_segment: int) -> RoutePlan:
    """Where one fleet source writes: ``OUTDIR/NAME/rec-NNN.mp4`` (rotated), ``rec-NNN.jsonl`` beside each with
    ``--json``, and with ``--masks`` ``masks-NNN/`` per start (NNN: the first segment of that start)."""
    folder = outdir / name
    return RoutePlan(spec=spec, name=name, output=folder / RECORDING, kind=OutputKind.SEGMENTS,
                     json_path=folder / Path(RECORDING).with_suffix(".jsonl").name if json_export else None,
                     masks_dir=folder / f"masks-{first_segment:03d}" if masks_export else None)

"""argv -> frozen configs: what each parsed command line asks for, read back by one function per group.

The flags are defined in :mod:`streamseg.cli.parser`; nothing here opens a file or loads a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from streamseg.config import InputConfig, ModelConfig, OutputConfig, RenderConfig, RunConfig


# -- argv -> configs ---------------------------------------------------------------------------
def model_config(args: argparse.Namespace, *, name: str | None = None) -> ModelConfig:
    from streamseg.models.heads.point_tracking import parse_point

    return ModelConfig(name=name or args.model, device=args.device, dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code, task=args.task, threshold=args.threshold,
                       mask_threshold=args.mask_threshold, overlap_threshold=args.overlap_threshold,
                       smooth=args.smooth, compile=args.compile, engine=args.engine, size=args.size,
                       infer_every=args.infer_every, track_buffer=args.track_buffer,
                       prompts=args.prompt if args.prompt is not None else (),
                       prompt_threshold=args.prompt_threshold, points=tuple(parse_point(p) for p in args.point))


def render_config(args: argparse.Namespace) -> RenderConfig:
    return RenderConfig(alpha=args.alpha, legend=args.legend, show_fps=args.show_fps, style=args.style,
                        labels=args.labels, classes=args.classes, exclude=args.exclude, keep=args.keep,
                        background=args.background, blend=args.blend)


def run_config(args: argparse.Namespace) -> RunConfig:
    from streamseg.errors import InputError

    if args.camera is None and not args.input:
        raise InputError("give an INPUT (file, folder, URL) or --camera N")
    if args.camera is not None and args.input:
        raise InputError("give either INPUT or --camera N, not both")
    sources = tuple(args.input) if args.input else (f"camera:{args.camera}",)
    from streamseg.outputs.publish import is_publish_target
    from streamseg.sources.names import is_url

    publish = tuple(o for o in args.output if is_publish_target(o))
    files = [Path(o) for o in args.output if not is_publish_target(o)]
    if len(files) > 1:
        raise InputError(f"-o: one file or folder output at most (got {', '.join(map(str, files))}); streams to "
                         "publish (rtmp://, rtsp://, srt://, udp://, tcp://, .m3u8) may be added")
    if publish and len(sources) > 1:
        raise InputError("publishing a stream takes one input (several inputs: run one streamseg per stream)")
    from streamseg.outputs.files import same_file

    for target in (t for t in publish if t.lower().endswith(".m3u8")):
        if any(not is_url(src) and same_file(Path(target), Path(src)) for src in sources):
            raise InputError(f"-o {target} is an input: choose another playlist name")
    live_window = args.camera is not None
    display = args.display or (not args.no_display and ((not args.output and args.serve is None) or live_window))
    return RunConfig(
        sources=sources,
        model=model_config(args),
        render=render_config(args),
        outputs=OutputConfig(output=files[0] if files else None, publish=publish, hls_time=args.hls_time,
                             hls_list_size=args.hls_list_size, publish_reconnect=args.reconnect,
                             publish_reconnect_max_delay=args.reconnect_max_delay, publish_timeout=args.timeout,
                             display=display, json_path=args.json, json_masks=args.json_masks,
                             masks_dir=args.masks, masks_by=args.masks_by, segment_time=args.segment_time, serve=args.serve,
                             serve_token=args.serve_token, serve_hosts=tuple(args.serve_host),
                             encoder=args.encoder),
        input=InputConfig(timeout=args.timeout, reconnect=args.reconnect, reconnect_max_delay=args.reconnect_max_delay,
                          duration=args.duration, max_latency=args.max_latency),
        batch_size=args.batch_size,
        drop_policy=args.drop_policy,
        threads=args.threads if isinstance(args.threads, int) else None,
        manage_threads=args.threads != "library",
    )


def batch_config(args: argparse.Namespace):
    """``streamseg batch`` argv -> :class:`~streamseg.cluster.batch.BatchConfig` (the model and render groups as for run)."""
    from streamseg.cluster.batch import BatchConfig

    return BatchConfig(inputs=tuple(args.inputs), outdir=args.output, model=model_config(args),
                       render=render_config(args), batch_size=args.batch_size, ray_address=args.ray,
                       workers=args.workers, gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                       json_export=args.json, json_masks=args.json_masks, masks_export=args.masks,
                       masks_by=args.masks_by)


def fleet_config(args: argparse.Namespace):
    """``streamseg fleet`` argv -> :class:`~streamseg.cluster.fleet_plan.FleetConfig` (model, render and input as for run)."""
    from streamseg.cluster.fleet_plan import RECORDING, FleetConfig

    return FleetConfig(
        sources=tuple(args.sources), outdir=args.output, model=model_config(args), render=render_config(args),
        input=InputConfig(timeout=args.timeout, reconnect=args.reconnect, reconnect_max_delay=args.reconnect_max_delay,
                          duration=args.duration, max_latency=args.max_latency),
        outputs=OutputConfig(output=Path(RECORDING), segment_time=args.segment_time, json_masks=args.json_masks,
                             json_path=Path(RECORDING) if args.json else None, masks_by=args.masks_by,
                             encoder=args.encoder),
        batch_size=args.batch_size, drop_policy=args.drop_policy, json_export=args.json, masks_export=args.masks,
        forward_threads=args.threads if isinstance(args.threads, int) else None,
        ray_address=args.ray, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, max_restarts=args.max_restarts, serve=args.serve,
        serve_token=args.serve_token, serve_hosts=tuple(args.serve_host))

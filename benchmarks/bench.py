"""``streamseg bench`` / ``python -m benchmarks``: every stage timed side by side in one run.

The flags are the command line's (``streamseg bench --help``); this module does the timing.

Rows (frames per second, medians of ``--repeats`` timed runs after a warm-up):

* naive: what a user of the seed example writes: PyAV decode, PIL, ``pipeline("image-segmentation")``,
  blend every returned mask at alpha 0.4, PyAV encode;
* forward: the model alone on pre-processed batches (same dtype and batch size as streamseg);
* decode, encode, render: each stage alone;
* streamseg: the CLI's whole path, file to annotated MP4.

Ratios: streamseg / naive, streamseg / forward, streamseg / slowest stage alone, and the
forward's GFLOP/s (counted with ``torch.utils.flop_counter``) / an fp32 matmul's GFLOP/s
measured in the same run. Results go to stdout and to a JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamseg.config import ModelConfig


def _median_rate(fn: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    """Items per second of ``fn`` (which returns how many items it handled): median over ``repeats`` runs."""
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def _batches(seg, images: list[np.ndarray], batch_size: int) -> list:
    """The frames pre-processed in batches, as the forward rows time them."""
    return [seg.preprocess(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def _forward_rate(seg, batches: list, repeats: int) -> float:
    """Frames per second of ``seg``'s forward alone on pre-processed ``batches`` (median of ``repeats``)."""
    import torch

    def forward() -> int:
        for b in batches:
            seg.forward(b)
        if seg.device.type == "cuda":
            torch.cuda.synchronize()
        return sum(b.shape[0] for b in batches)

    return _median_rate(forward, repeats)[0]


def make_segformer_b0(folder: Path, *, num_labels: int = 150, size: int = 512) -> Path:
    """SegFormer-B0's architecture (ADE20k head: 150 classes) with random weights, saved like a Hub model."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    from transformers.models.segformer.image_processing_pil_segformer import SegformerImageProcessorPil

    torch.manual_seed(0)
    config = SegformerConfig(num_labels=num_labels, id2label={i: f"class{i}" for i in range(num_labels)},
                             label2id={f"class{i}": i for i in range(num_labels)})  # defaults are B0's
    SegformerForSemanticSegmentation(config).eval().save_pretrained(folder)
    SegformerImageProcessorPil(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


def make_clip(path: Path, *, frames: int, width: int = 1280, height: int = 720, fps: int = 25) -> Path:
    """A synthetic street clip (moving cars and people) at the given size, H.264."""
    import av

    from streamseg.testing.scenes import StreetScene

    scene = StreetScene(11, width, height)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"crf": "23", "preset": "veryfast"}
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(scene.render(float(i))[0], format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return path


def _decode_all(video: Path) -> list[np.ndarray]:
    import av

    with av.open(str(video)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        return [f.to_ndarray(format="rgb24") for f in c.decode(s)]


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def run_benchmark(*, model: ModelConfig, generate_model: bool, video: Path | None, frames: int, naive_frames: int,
                  batch_size: int, repeats: int, out_dir: Path | None, loaded_rows: bool = True,
                  engines: tuple[str, ...] = ()) -> dict:
    """Every row and ratio for ``model`` (or, with ``generate_model``, SegFormer-B0's architecture with random
    weights and ``model``'s other settings) on ``video`` (or a generated 720p clip); and for each of ``engines``
    (``ENGINE:DTYPE``, e.g. ``openvino:bfloat16``) its own rows (see :func:`_engine_rows`)."""
    import torch

    from streamseg.app import Run
    from streamseg.config import Engine, OutputConfig, RenderConfig, RunConfig
    from streamseg.frames import Frame, SegmentationResult
    from streamseg.models.segmenter import Segmenter
    from streamseg.outputs.video import VideoFileSink
    from streamseg.render.renderer import Renderer

    work = Path(tempfile.mkdtemp(prefix="streamseg-bench-"))
    if generate_model:
        model = dataclasses.replace(model, name=str(make_segformer_b0(work / "segformer-b0")))
    model_dir, device, compile = model.name, model.device, model.compile
    video = video or make_clip(work / "clip.mp4", frames=frames)
    images = _decode_all(video)[:frames]
    height, width = images[0].shape[:2]
    seg = Segmenter.load(model)
    results: dict = {"rows": {}}

    # decode only
    def decode() -> int:
        return len(_decode_all(video)[:frames])

    results["rows"]["decode"] = _median_rate(decode, repeats)[0]

    # forward only, on pre-processed batches
    batches = _batches(seg, images, batch_size)
    results["rows"]["forward"] = _forward_rate(seg, batches, repeats)

    # full inference step as the pipeline runs it (pre-process + forward + post-process)
    def inference() -> int:
        for i in range(0, len(images), batch_size):
            seg(images[i:i + batch_size])
        return len(images)

    results["rows"]["inference"] = _median_rate(inference, repeats)[0]

    # render only
    label_maps = seg(images[:batch_size])
    renderer = Renderer(RenderConfig(), seg.id2label, seg.num_labels)

    seg_results = [SegmentationResult(frame=Frame(index=i, image=img), label_map=label_maps[i % len(label_maps)])
                   for i, img in enumerate(images)]

    def render() -> int:
        for r in seg_results:
            renderer(r)
        return len(seg_results)

    results["rows"]["render"] = _median_rate(render, repeats)[0]

    # encode only
    def encode() -> int:
        with VideoFileSink(work / "encode.mp4", fps=25) as sink:
            for i, img in enumerate(images):
                sink.write(Frame(index=i, image=img, pts=i, time_base=Fraction(1, 25)))
        return len(images)

    results["rows"]["encode"] = _median_rate(encode, repeats)[0]

    # streamseg: the whole path a user's run takes, file to annotated MP4: frames per second of the run itself
    # (the pipeline's wall time; loading the model is timed by nobody's forward either)
    config = RunConfig(sources=(str(video),), model=dataclasses.replace(model, engine=seg.engine),
                       outputs=OutputConfig(output=work / "streamseg.mp4"), batch_size=batch_size)
    e2e_runs: list[float] = []

    def streamseg_run() -> int:
        with Run(config) as run:
            report = run.run()
        e2e_runs.append(report.total.fps)
        return report.total.frames_written

    _median_rate(streamseg_run, repeats)
    results["rows"]["streamseg"] = statistics.median(e2e_runs[1:] or e2e_runs)  # after the warm-up run

    # The same job as a user's command, each in its own process (OpenMP's wait policy is fixed when torch
    # loads): alone, then beside one busy process; with the thread budget, and with the libraries' defaults.
    if loaded_rows:
        import av

        with av.open(str(video)) as probe:  # the same frames as the other rows: --duration in media time
            rate = float(probe.streams.video[0].average_rate or 25)
        cli = [str(video), "-o", str(work / "cli.mp4"), "--model", model_dir, "--batch-size", str(batch_size),
               "--device", device, "--dtype", model.dtype.value, "-q", "--duration", f"{frames / rate:.6f}"]
        for loaded in (False, True):
            for budget in (True, False):
                name = f"e2e {'loaded' if loaded else 'idle'}{'' if budget else ' (library threads)'}"
                results["rows"][name] = _cli_fps(cli if budget else [*cli, "--threads", "library"], repeats,
                                                 loaded=loaded)

    # naive: the seed's recipe, one frame at a time
    results["rows"]["naive"] = _median_rate(lambda: _naive(video, model_dir, work / "naive.mp4", naive_frames,
                                                           device), max(1, repeats // 2))[0]

    # FLOPs of one forward batch, and the machine's matmul rate
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        seg.eager_model(pixel_values=batches[0])  # counted in torch whatever engine ran it
    flops_per_frame = counter.get_total_flops() / batches[0].shape[0]
    rows = results["rows"]
    forward_gflops = flops_per_frame * rows["forward"] / 1e9
    mm = matmul_gflops()
    engine_ratios = {}
    for choice in engines:
        engine_ratios.update(_engine_rows(choice, model=model, video=video, images=images, batch_size=batch_size,
                                          repeats=repeats, loaded_rows=loaded_rows, work=work, rows=rows,
                                          flops_per_frame=flops_per_frame, matmul=mm))
    stages = {k: rows[k] for k in ("decode", "inference", "render", "encode")}
    slowest = min(stages, key=stages.get)
    results.update({
        "ratios": {
            "streamseg/naive": rows["streamseg"] / rows["naive"],
            "streamseg/forward": rows["streamseg"] / rows["forward"],
            f"streamseg/slowest stage ({slowest})": rows["streamseg"] / stages[slowest],
            "forward GFLOP/s / matmul GFLOP/s": forward_gflops / mm,
            **({"e2e loaded / e2e idle": rows["e2e loaded"] / rows["e2e idle"],
                "e2e idle / e2e idle (library threads)": rows["e2e idle"] / rows["e2e idle (library threads)"],
                "e2e loaded (library threads) / e2e idle (library threads)":
                    rows["e2e loaded (library threads)"] / rows["e2e idle (library threads)"]}
               if loaded_rows else {}),
            **engine_ratios,
        },
        "forward_gflops": forward_gflops,
        "matmul_gflops": mm,
        "gflop_per_frame": flops_per_frame / 1e9,
        "workload": {"model": "SegFormer-B0 architecture, 150 classes, random weights" if generate_model else model.name,
                     "width": width,
                     "height": height, "frames": len(images), "naive_frames": naive_frames,
                     "batch_size": batch_size, "dtype": str(seg.dtype), "device": str(seg.device),
                     "repeats": repeats, "compile": compile, "engine": seg.engine.value, "task": seg.task.value},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "versions": _versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = (f"{results['date'][:10]}-{'gpu' if seg.device.type == 'cuda' else 'cpu'}-{width}x{height}"
                f"-b{batch_size}{'-compiled' if compile else ''}"
                f"{'-' + seg.engine.value if seg.engine is not Engine.TORCH else ''}.json")
        (out_dir / name).write_text(json.dumps(results, indent=2) + "\n")
        results["written_to"] = str(out_dir / name)
    return results


def _engine_rows(choice: str, *, model: ModelConfig, video: Path, images: list[np.ndarray], batch_size: int,
                 repeats: int, loaded_rows: bool, work: Path, rows: dict, flops_per_frame: float,
                 matmul: float) -> dict:
    """Rows for one engine and precision (``ENGINE:DTYPE``), each named ``ROW [ENGINE PRECISION]``, added to
    ``rows``; returns its ratios:

    * forward: the model alone on pre-processed batches; streamseg: the whole path in this process;
    * command: ``streamseg VIDEO -o OUT`` as a user types it, frames / the command's wall time, start-up
      included (the converted model already cached: a first command converts it); command loaded: the same
      beside a busy process; start-up (seconds, not frames/s): the command's wall time less its pipeline's.
    """
    import re
    import subprocess
    import sys

    from streamseg.app import Run
    from streamseg.config import OutputConfig, RunConfig
    from streamseg.models.segmenter import Segmenter

    engine, _, dtype = choice.partition(":")
    config = dataclasses.replace(model, engine=engine, dtype=dtype or "auto")
    seg = Segmenter.load(config)
    tag = f"[{seg.engine_text}]"
    rows[f"forward {tag}"] = _forward_rate(seg, _batches(seg, images, batch_size), repeats)
    fps: list[float] = []

    def streamseg_run() -> int:
        run_config = RunConfig(sources=(str(video),), model=config, batch_size=batch_size,
                               outputs=OutputConfig(output=work / "engine.mp4"))
        with Run(run_config) as run:
            report = run.run()
        fps.append(report.total.fps)
        return report.total.frames_written

    _median_rate(streamseg_run, repeats)
    rows[f"streamseg {tag}"] = statistics.median(fps[1:] or fps)
    ratios = {f"streamseg/forward {tag}": rows[f"streamseg {tag}"] / rows[f"forward {tag}"],
              f"forward GFLOP/s / matmul GFLOP/s {tag}": flops_per_frame * rows[f"forward {tag}"] / 1e9 / matmul}
    if not loaded_rows:
        return ratios
    argv = [sys.executable, "-m", "streamseg", str(video), "-o", str(work / "command.mp4"), "--model", model.name,
            "--engine", engine, "--dtype", dtype or "auto", "--batch-size", str(batch_size), "--device",
            model.device, "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for loaded in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
        rates, startups = [], []
        try:
            for i in range(repeats + (0 if loaded else 1)):  # idle: a first command converts and caches
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t0
                found = re.search(r"frames read \d+, written (\d+).*?; [\d.]+ fps over ([\d.]+) s", proc.stderr)
                if proc.returncode != 0 or not found:
                    raise RuntimeError(f"streamseg failed in the benchmark: {proc.stderr.strip()[-300:]}")
                if loaded or i > 0:
                    rates.append(int(found.group(1)) / wall)
                    startups.append(wall - float(found.group(2)))
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        rows[f"command {'loaded ' if loaded else ''}{tag}"] = statistics.median(rates)
        if not loaded:
            rows[f"start-up seconds {tag}"] = statistics.median(startups)
    ratios.update({
        f"command/naive {tag}": rows[f"command {tag}"] / rows["naive"],
        f"command loaded / command {tag}": rows[f"command loaded {tag}"] / rows[f"command {tag}"],
    })
    return ratios


def _cli_fps(argv: list[str], repeats: int, *, loaded: bool) -> float:
    """Median frames/s (the summary's own figure) of ``streamseg ARGV`` in fresh processes; ``loaded``: beside
    a busy process started and stopped here."""
    import re
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    rates = []
    try:
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-m", "streamseg", *argv], capture_output=True, text=True, env=env)
            found = re.search(r"; ([\d.]+) fps over", proc.stderr)
            if proc.returncode != 0 or not found:
                raise RuntimeError(f"streamseg failed in the benchmark: {proc.stderr.strip()[-300:]}")
            rates.append(float(found.group(1)))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return statistics.median(rates)


def _naive(video: Path, model_dir: str, out: Path, frames: int, device: str) -> int:
    """The seed example's recipe on video: PIL frames through ``pipeline``, masks blended one by one."""
    import av
    from transformers import pipeline

    segmenter = _naive.cache.get(model_dir)
    if segmenter is None:
        dev = 0 if device.startswith("cuda") or (device == "auto" and _cuda()) else -1
        segmenter = _naive.cache[model_dir] = pipeline("image-segmentation", model=model_dir, device=dev)
    colours_rng = np.random.default_rng(42)
    n = 0
    with av.open(str(video)) as src, av.open(str(out), mode="w") as dst:
        stream = dst.add_stream("libx264", rate=25)
        first = True
        for frame in src.decode(video=0):
            if n == frames:
                break
            image = frame.to_image()
            if first:
                stream.width, stream.height, stream.pix_fmt = image.width, image.height, "yuv420p"
                first = False
            segments = segmenter(image)
            colours = colours_rng.integers(0, 255, size=(len(segments), 3)) / 255.0
            canvas = np.asarray(image).astype(np.float32) / 255.0
            for i, s in enumerate(segments):
                m = np.array(s["mask"].convert("L")) > 0
                canvas[m] = canvas[m] * 0.6 + colours[i] * 0.4
            vf = av.VideoFrame.from_ndarray((canvas * 255).astype(np.uint8), format="rgb24")
            dst.mux(stream.encode(vf))
            n += 1
        dst.mux(stream.encode(None))
    return n


_naive.cache = {}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _versions() -> dict:
    import av
    import cv2
    import torch
    import transformers

    from streamseg import __version__

    return {"streamseg": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "av": av.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def format_table(results: dict) -> str:
    rows = results["rows"]
    w = results["workload"]
    lines = [f"workload: {w['model']}, {w['width']}x{w['height']}, {w['frames']} frames (naive: {w['naive_frames']}), "
             f"batch {w['batch_size']}, {w['dtype']} on {w['device']}{', compiled' if w.get('compile') else ''}"
             f"{', ' + w['engine'] if w.get('engine', 'torch') != 'torch' else ''}, "
             f"median of {w['repeats']}",
             f"{'row':<36}{'frames/s':>12}"]
    for name, value in rows.items():
        lines.append(f"{name:<36}{value:>12.2f}")
    lines.append(f"forward: {results['gflop_per_frame']:.2f} GFLOP/frame, {results['forward_gflops']:.1f} GFLOP/s; "
                 f"fp32 matmul 2048^2: {results['matmul_gflops']:.1f} GFLOP/s")
    for name, value in results["ratios"].items():
        lines.append(f"{name:<60}{value:>8.2f}x")
    return "\n".join(lines)

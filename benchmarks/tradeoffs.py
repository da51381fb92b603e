"""Speed against accuracy: the demo model at three inference sizes, running on every 1st, 2nd and 4th frame.

    python -m benchmarks.tradeoffs [--frames 150] [--out benchmarks/results]

A held-out street scene (a seed the demo model never saw) is rendered at 640x360 with the true
class of every pixel, stored losslessly (FFV1), and run through streamseg as a user's file job
would (``Run``: decode, batched inference, render, encode, ``--masks``) for each ``--size`` and
``--infer-every``. Frames per second are the run's own (the pipeline's wall time); mIoU is
measured on every frame written, the reused labels of the frames between included.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks import save_results, with_machine

ROOT = Path(__file__).resolve().parents[1]
SIZES = (None, 192, 128)  # the model's own 256x256, then the shortest edge at 192 and 128 (aspect kept)
EVERY = (1, 2, 4)


def held_out_clip(path: Path, frames: int) -> np.ndarray:
    """Write the clip; return the true labels, ``(frames, H, W)``."""
    import av

    from streamseg.testing.scenes import StreetScene

    scene = StreetScene(900_200, 640, 360)
    truths = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "bgr0"
        for i in range(frames):
            image, truth = scene.render(float(i))
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(vf))
            truths.append(truth)
        out.mux(stream.encode(None))
    return np.stack(truths)


def miou(preds: np.ndarray, truths: np.ndarray, classes: int) -> float:
    ious = []
    for c in range(classes):
        union = np.sum((preds == c) | (truths == c))
        if union:
            ious.append(np.sum((preds == c) & (truths == c)) / union)
    return float(np.mean(ious))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tradeoffs", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import streamseg  # noqa: F401  (OpenCV before PyAV)
    from streamseg.app import Run
    from streamseg.config import ModelConfig, OutputConfig, RunConfig
    from streamseg.models.segmenter import Segmenter
    from streamseg.outputs.exports import read_mask_png
    from streamseg.testing.scenes import CLASSES

    work = Path(tempfile.mkdtemp(prefix="streamseg-tradeoffs-"))
    clip = work / "held-out.mkv"
    truths = held_out_clip(clip, args.frames)
    model_dir = str(ROOT / "sample_media" / "demo-segformer")
    table = []
    for size in SIZES:
        segmenter = Segmenter.load(ModelConfig(name=model_dir, device="cpu", size=size))
        for every in EVERY:
            masks = work / f"masks-{size}-{every}"
            config = RunConfig(sources=(str(clip),), model=ModelConfig(name=model_dir, device="cpu", size=size,
                                                                         infer_every=every),
                               outputs=OutputConfig(output=work / "o.mp4", masks_dir=masks),
                               batch_size=args.batch_size)
            runs = []
            for _ in range(3):  # the first run warms up; the better of the next two is kept
                shutil.rmtree(masks, ignore_errors=True)
                with Run(config, segmenter=segmenter) as run:
                    runs.append(run.run().total)
            best = max(runs[1:], key=lambda st: st.fps)
            preds = np.stack([read_mask_png(path) for path in sorted(masks.iterdir())])
            row = {"size": size or "model (256x256)", "infer_every": every, "fps": best.fps,
                   "inference_ms_per_frame": best.stages["inference"].mean_ms,
                   "miou": miou(preds, truths, len(CLASSES))}
            table.append(row)
            print(f"size {str(row['size']):>16}  every {every}  {row['fps']:7.1f} fps  inference "
                  f"{row['inference_ms_per_frame']:5.1f} ms/frame  mIoU {row['miou']:.3f}", flush=True)
    results = with_machine({"table": table, "workload": {"model": "sample_media/demo-segformer", "clip": "held-out "
                                                         "street scene 640x360, FFV1", "frames": args.frames,
                                                         "batch_size": args.batch_size}})
    save_results(results, args.out, f"{results['date'][:10]}-tradeoffs-size-every.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

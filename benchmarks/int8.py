"""``python -m benchmarks.int8``: OpenVINO int8 (NNCF post-training quantisation) against fp32 and bf16, side by side.

Needs ``pip install nncf`` (not a streamseg dependency: int8 is not shipped unless it is measurably faster than
bf16 with labels >= 97% equal to torch fp32 on the demo model; see benchmarks/README.md). For each model
(the demo model, trained; SegFormer-B0's architecture, random weights): the graph converted as streamseg
converts it, quantised with NNCF calibrated on the first ``--calibration`` frames of the sample clip, then
images/s at batch 1 and 8 for f32, bf16 and int8, and each one's labels against torch fp32 on the clip's
later frames. Writes ``results/DATE-cpu-int8.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rate(fn, x, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import nncf
    import openvino as ov
    import torch
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from benchmarks.bench import _decode_all, make_segformer_b0
    from streamseg.models.engine_cache import Logits
    from streamseg.models.openvino_engine import convert
    from streamseg.models.preprocess import Preprocessor, PreprocessSpec

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calibration", type=int, default=30, help="frames to calibrate on (default 30)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="streamseg-int8-"))
    frames = _decode_all(ROOT / "sample_media" / "street.mp4")
    models = {"demo (trained, 256x256)": ROOT / "sample_media" / "demo-segformer",
              "SegFormer-B0 architecture (random, 512x512)": make_segformer_b0(work / "b0")}
    core = ov.Core()
    results: dict = {"models": {}}
    for name, folder in models.items():
        model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
        spec = PreprocessSpec.from_processor(AutoImageProcessor.from_pretrained(folder))
        pre = Preprocessor(spec, device=torch.device("cpu"), dtype=torch.float32)
        calib = [pre([f]).numpy() for f in frames[:args.calibration]]
        held = pre(frames[args.calibration:][::2][:32])
        h, w = held.shape[-2:]
        convert(Logits(model), work / f"{folder.name}.xml", h, w)
        graph = core.read_model(work / f"{folder.name}.xml")
        started = time.perf_counter()
        quantised = nncf.quantize(graph, nncf.Dataset(calib), subset_size=len(calib))
        quantise_seconds = time.perf_counter() - started
        # NNCF's preset for transformers keeps LayerNorm, softmax and GELU in float (SegFormer is one)
        transformer = nncf.quantize(graph, nncf.Dataset(calib), subset_size=len(calib),
                                    model_type=nncf.ModelType.TRANSFORMER)
        with torch.inference_mode():
            reference = model(pixel_values=held).logits.argmax(1).numpy()
        row: dict = {"quantise_seconds": quantise_seconds, "calibration_frames": len(calib)}
        for label, g, precision in (("f32", graph, "f32"), ("bf16", graph, "bf16"), ("int8", quantised, "bf16"),
                                    ("int8 (f32 rest)", quantised, "f32"), ("int8 transformer", transformer, "bf16")):
            compiled = core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                     "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})

            def run(x, compiled=compiled):
                return compiled(x)[compiled.output(0)]

            labels = run(held.numpy()).argmax(1)
            row[label] = {"agreement": float((labels == reference).mean()),
                          "batch 1 images/s": _rate(run, held[:1].numpy(), args.repeats),
                          "batch 8 images/s": _rate(run, held[:8].numpy(), args.repeats)}
            print(f"{name:<46}{label:<18}labels {row[label]['agreement']:.2%}  "
                  f"b1 {row[label]['batch 1 images/s']:.1f}/s  b8 {row[label]['batch 8 images/s']:.1f}/s", flush=True)
        with torch.inference_mode():
            row["torch f32"] = {"batch 1 images/s": _rate(lambda x: model(pixel_values=x).logits, held[:1],
                                                          args.repeats),
                                "batch 8 images/s": _rate(lambda x: model(pixel_values=x).logits, held[:8],
                                                          args.repeats)}
        results["models"][name] = row
    results["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["versions"] = {"openvino": ov.__version__, "nncf": nncf.__version__, "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{results['date'][:10]}-cpu-int8.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

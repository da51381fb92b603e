"""Say what to segment: frames per second against the number of text prompts (1, 4, 16), streamseg's path against
the reference, and against the number of objects tracked by point (1, 4, 16).

    python -m benchmarks.prompts [--prompts 1,4,16] [--objects 1,4,16] [--frames 8] [--size 640x360]
                                 [--device cpu] [--model ID_OR_DIR] [--sam-model ID_OR_DIR]

The model is CLIPSeg with CIDAS/clipseg-rd64-refined's architecture (``CLIPSegConfig()``'s defaults:
ViT-B/16 vision, 352x352 input) and random weights unless ``--model`` names a real one; the cost of
a forward does not depend on the weights. Side by side in one run, on the same frames:

- **streamseg**: ``Segmenter.segment`` on batches of 4 frames: the vision encoder once per frame,
  the decoder per (frame, prompt), text features cached; labels at the source size.
- **reference**: what the model's documentation shows, per frame: the frame repeated once per
  prompt through ``CLIPSegForImageSegmentation(input_ids, pixel_values)`` (encoder per prompt,
  text per call), then the same labelling.

Tracked objects: a SAM 2 video model (facebook/sam2.1-hiera-tiny's architecture, ``Sam2VideoConfig()``'s
defaults, random weights, unless ``--sam-model``) following N objects given as points on the
first frame, frames streamed one batch after another as a live run does (the encoder once per
batch, then each frame's session step: memory attention and the mask decoder per object).
"""

from __future__ import annotations

import argparse
import string
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import save_results, with_machine

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["person", "car", "tree", "road", "sky", "building", "grass", "dog", "bicycle", "bus", "truck", "sign",
         "window", "door", "wheel", "shadow"]


def random_clipseg(folder: Path) -> Path:
    """CLIPSeg-rd64's architecture with random weights, a character tokenizer and a 352x352 processor."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer, ViTImageProcessorPil

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + " ,.-'":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    config = CLIPSegConfig()
    config.text_config.vocab_size = 49408
    torch.manual_seed(0)
    CLIPSegForImageSegmentation(config).eval().save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 352, "width": 352}, image_mean=[0.485, 0.456, 0.406],
                         image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def track_rows(args, frames, tmp: Path) -> list[dict]:
    """Frames per second with 1, 4, 16... objects tracked, each started by a point on the first frame."""
    import numpy as np
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from streamseg.config import ModelConfig
    from streamseg.models.segmenter import Segmenter

    model = args.sam_model
    if model is None:
        torch.manual_seed(0)
        Sam2VideoModel(Sam2VideoConfig()).eval().save_pretrained(tmp / "sam2")
        model = str(tmp / "sam2")
    h, w = frames[0].image.shape[:2]
    rows = []
    for count in (int(n) for n in args.objects.split(",")):
        grid = int(np.ceil(np.sqrt(count)))
        points = tuple(((k % grid + 0.5) * w / grid, (k // grid + 0.5) * h / grid) for k in range(count))
        seg = Segmenter.load(ModelConfig(name=model, device=args.device, points=points))
        seg.segment(frames[:1])  # the clicks' frame, and a warm-up
        t0 = time.perf_counter()
        for i in range(1, len(frames), 4):
            seg.segment(frames[i:i + 4])
        fps = (len(frames) - 1) / (time.perf_counter() - t0)
        rows.append({"objects": count, "fps": round(fps, 3)})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.prompts", description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", default="1,4,16", help="prompts per row ('' to skip)")
    p.add_argument("--frames", type=int, default=8, help="frames per streamseg row (the reference gets half)")
    p.add_argument("--size", default="640x360")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", help="a CLIPSeg id or folder (default: the rd64 architecture, random weights)")
    p.add_argument("--objects", default="1,4,16", help="objects to track per row ('' to skip)")
    p.add_argument("--sam-model", help="a SAM 2 video id or folder (default: hiera-tiny's architecture, random weights)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from streamseg.config import ModelConfig
    from streamseg.frames import Frame
    from streamseg.models.segmenter import Segmenter
    from streamseg.testing.scenes import scene

    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = [Frame(image=scene(k, width, height)[0], index=k) for k in range(args.frames)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(random_clipseg(Path(tmp) / "clipseg"))
        for count in (int(n) for n in args.prompts.split(",") if n):
            prompts = tuple(WORDS[:count]) if count <= len(WORDS) else tuple(f"thing {k}" for k in range(count))
            seg = Segmenter.load(ModelConfig(name=model, device=args.device, prompts=prompts))
            seg.segment(frames[:1])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(frames), 4):
                seg.segment(frames[i:i + 4])
            ours = len(frames) / (time.perf_counter() - t0)
            head, n_ref = seg.head, max(1, len(frames) // 2)
            tokens = head.tokenizer(list(prompts), padding=True, return_tensors="pt").to(seg.device)
            t0 = time.perf_counter()
            for frame in frames[:n_ref]:
                with torch.inference_mode():
                    pv = seg.preprocess([frame.image])
                    logits = head.eager_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                              pixel_values=pv.repeat(count, 1, 1, 1)).logits
                    void = logits.new_full((1, *logits.shape[-2:]), head._void_logit)
                    head.label_maps(torch.cat([logits.reshape(count, *logits.shape[-2:]), void])[None],
                                    [frame.image.shape[:2]])
            reference = n_ref / (time.perf_counter() - t0)
            row = {"prompts": count, "streamseg_fps": round(ours, 3), "reference_fps": round(reference, 3),
                   "speedup": round(ours / reference, 2)}
            rows.append(row)
            print(row, flush=True)
        objects = [] if not args.objects else track_rows(args, frames, Path(tmp))
    print("\n| prompts | streamseg frames/s | reference frames/s | streamseg / reference |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['prompts']} | {r['streamseg_fps']} | {r['reference_fps']} | {r['speedup']}x |")
    if objects:
        print("\n| objects tracked | frames/s |")
        print("|---|---|")
        for r in objects:
            print(f"| {r['objects']} | {r['fps']} |")
    results = with_machine({"benchmark": "prompts", "model": args.model or "CLIPSeg rd64 architecture, random weights",
                            "sam_model": args.sam_model or "SAM 2.1 hiera-tiny architecture, random weights",
                            "size": args.size, "device": args.device, "frames": args.frames, "rows": rows,
                            "objects": objects})
    save_results(results, args.out, f"{time.strftime('%Y-%m-%d')}-prompts-{args.device}-{args.size}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

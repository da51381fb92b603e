"""Train the offline demo model: a tiny SegFormer that knows the synthetic street classes.

The Hugging Face Hub cannot be reached from every machine streamseg is built on,
so the README's main command runs on this model. It is a real
``SegformerForSemanticSegmentation`` built from a ``SegformerConfig``, trained
here on scenes from :mod:`streamseg.synthetic` (which knows the true class of
every pixel) and saved with ``save_pretrained`` next to its image-processor
config, so it loads through the same path as any Hub model.

    python sample_media/train_demo_model.py            # about 30 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import SegformerConfig, SegformerForSemanticSegmentation
from transformers.models.segformer.image_processing_pil_segformer import SegformerImageProcessorPil

from streamseg.testing.scenes import CLASSES, StreetScene

HERE = Path(__file__).resolve().parent
SIZE = 256
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def make_config() -> SegformerConfig:
    return SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=[1, 1, 2, 1], sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[16, 32, 64, 128], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        num_attention_heads=[1, 1, 2, 4], mlp_ratios=[4, 4, 4, 4], decoder_hidden_size=96,
        num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)}, semantic_loss_ignore_index=255,
    )


def make_dataset(n_scenes: int, times_per_scene: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes at the sample clip's size, resized as the processor will: (N,3,S,S) uint8, (N,S,S) int64."""
    images, labels = [], []
    rng = np.random.default_rng(seed)
    for s in range(n_scenes):
        scene = StreetScene(seed * 100_000 + s, width=640, height=360)
        for _ in range(times_per_scene):
            img, lab = scene.render(float(rng.uniform(0, 300)))
            images.append(torch.from_numpy(img).permute(2, 0, 1))
            labels.append(torch.from_numpy(lab))
    x = torch.stack(images).float()
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    y = F.interpolate(torch.stack(labels)[:, None].float(), size=(SIZE, SIZE), mode="nearest")[:, 0]
    return x.round().clamp(0, 255).to(torch.uint8), y.long()


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return (x.float() - mean) / std


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "demo-segformer")
    parser.add_argument("--scenes", type=int, default=700)
    parser.add_argument("--steps", type=int, default=1400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    t0 = time.time()
    x, y = make_dataset(args.scenes, 3, seed=1)
    print(f"dataset {tuple(x.shape)} in {time.time() - t0:.0f}s", flush=True)

    model = SegformerForSemanticSegmentation(make_config())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        xb, yb = x[idx].float(), y[idx]
        flip = torch.rand(args.batch, generator=gen) < 0.5
        xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
        xb = xb * torch.empty(args.batch, 1, 1, 1).uniform_(0.8, 1.2, generator=gen)  # brightness jitter
        loss = model(pixel_values=normalise(xb.clamp(0, 255)), labels=yb).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    SegformerImageProcessorPil(size={"height": SIZE, "width": SIZE}, image_mean=list(MEAN), image_std=list(STD),
                               do_reduce_labels=False).save_pretrained(args.out)
    print(f"saved to {args.out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

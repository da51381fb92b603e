"""Instance/panoptic models' forward in torch (fp32, bf16 autocast) and OpenVINO (f32, bf16), side by side.

    python benchmarks/universal_engines.py detr|m2f

Random weights, batch 1, 2 threads: DETR-ResNet-50 panoptic (native ResNet) at 480x640, or Mask2Former's
default config at 384x384, wrapped as streamseg converts them (pixel mask of ones inside the graph).
"""
import sys
import time
import warnings

import openvino as ov
import torch
from transformers import DetrConfig, DetrForSegmentation, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig

torch.set_num_threads(2)
def timeit(f, n=3):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n
class Wrap(torch.nn.Module):
    def __init__(s, m, keys): super().__init__(); s.m=m; s.keys=keys
    def forward(s, x):
        o = s.m(pixel_values=x, pixel_mask=torch.ones((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.long))
        return tuple(o[k] for k in s.keys)
which = sys.argv[1]
if which == "detr":
    cfg = DetrConfig(use_timm_backbone=False, backbone_config=ResNetConfig(out_features=["stage1","stage2","stage3","stage4"]), use_pretrained_backbone=False)
    m = DetrForSegmentation(cfg).eval(); keys=("logits","pred_masks"); hw=(480,640)
else:
    m = Mask2FormerForUniversalSegmentation(Mask2FormerConfig()).eval(); keys=("class_queries_logits","masks_queries_logits"); hw=(384,384)
x = torch.rand(1,3,*hw)
w = Wrap(m, keys).eval()
with torch.no_grad():
    tt = timeit(lambda: w(x))
    with torch.autocast("cpu", torch.bfloat16):
        tb = timeit(lambda: w(x))
with warnings.catch_warnings(), torch.no_grad():
    warnings.simplefilter("ignore")
    g = ov.convert_model(w, example_input=x, input=[ov.PartialShape([-1,3,*hw])])

for prec in ("f32","bf16"):
    for hint in ("LATENCY",):
        c = ov.Core().compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": prec, "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": hint, "NUM_STREAMS": 1})
        t = timeit(lambda: c([x.numpy()]))
        print(which, prec, f"ov {1/t:.2f} img/s")
print(which, f"torch fp32 {1/tt:.2f} img/s  torch bf16 autocast {1/tb:.2f}")

"""``python benchmarks/openvino_hints.py OUT.json``: SegFormer-B0 512x512 (random weights) on this machine's cores: one request of batch 8 (LATENCY, 1 stream, 2 threads) against
THROUGHPUT (2 streams x 1 thread, two requests of batch 4 in flight), and batch 1 latency each way."""
import json
import sys
import time
import warnings

import numpy as np
import openvino as ov
import torch
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from streamseg.models.engine_cache import Logits

m = SegformerForSemanticSegmentation(SegformerConfig(num_labels=150)).eval()
with warnings.catch_warnings(), torch.no_grad():
    warnings.simplefilter("ignore")
    g = ov.convert_model(Logits(m), example_input=torch.zeros(1,3,512,512), input=[ov.PartialShape([-1,3,512,512])])
core = ov.Core()
x8 = np.random.rand(8,3,512,512).astype(np.float32)
def rate(f, n, frames):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return frames*n/(time.perf_counter()-t)
out = {}
for prec in ("bf16", "f32"):
    lat = core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": prec, "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    out[f"{prec} latency b8"] = rate(lambda: lat([x8]), 3, 8)
    out[f"{prec} latency b1"] = rate(lambda: lat([x8[:1]]), 6, 1)
    thr = core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": prec, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2})
    q = ov.AsyncInferQueue(thr, 2)
    def two():
        q.start_async([x8[:4]]); q.start_async([x8[4:]]); q.wait_all()
    out[f"{prec} throughput 2x4"] = rate(two, 3, 8)
    out[f"{prec} throughput b1"] = rate(lambda: thr([x8[:1]]), 6, 1)
    print({k: round(v, 2) for k, v in out.items()}, flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)

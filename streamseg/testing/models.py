"""Tiny random-weight models built from real transformers configs, saved the way users' models are (config,
weights and processor in a folder) and loaded through the same path as a Hub id: for the tests, the benchmarks,
and for trying streamseg offline::

    python -m streamseg.testing models DIR      # DIR/segformer, DIR/clipseg (--prompt), DIR/sam2 (--point), ...

No output is faked: where random weights would give no segment at all (instance/panoptic heads are rarely
confident), a classifier's weights are scaled up, and that is all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def save_tiny_segformer(folder: Path, *, num_labels: int = 5, size: int = 64, seed: int = 0) -> Path:
    """A real SegformerForSemanticSegmentation (random weights) saved the way users' models are."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    from transformers.models.segformer.image_processing_pil_segformer import SegformerImageProcessorPil

    torch.manual_seed(seed)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[8, 16],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=num_labels,
                             id2label={i: f"class{i}" for i in range(num_labels)},
                             label2id={f"class{i}": i for i in range(num_labels)})
    SegformerForSemanticSegmentation(config).eval().save_pretrained(folder)
    SegformerImageProcessorPil(size={"height": size, "width": size}).save_pretrained(folder)
    return folder


def save_tiny_mask2former(folder: Path, *, seed: int = 0) -> Path:
    """A real Mask2FormerForUniversalSegmentation (random weights, Swin backbone) and its image processor.

    With random weights no query clears the pipeline's 0.9 score threshold, so the class
    predictor's weights are scaled by 40: its softmax becomes confident and some queries
    give segments. Nothing else is changed, and no output is faked.
    """
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    torch.manual_seed(seed)
    backbone = {"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                "window_size": 4, "image_size": 64, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=4, hidden_dim=32, num_queries=10, encoder_layers=1,
                               decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2,
                               mask_feature_size=32, feature_size=32, id2label={i: f"thing{i}" for i in range(4)},
                               label2id={f"thing{i}": i for i in range(4)})
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        model.class_predictor.weight.mul_(40)
    model.save_pretrained(folder)
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    return folder


def save_tiny_detr_panoptic(folder: Path, *, seed: int = 0, resnet: str | None = None, timm_names: bool = False) -> Path:
    """A real DetrForSegmentation with a native ResNet backbone, random weights, its class classifier scaled by
    40 so that queries are confident (see save_tiny_mask2former).

    ``resnet``: the backbone has the shapes of that timm ResNet (``resnet50``: the Hub's DETR) instead of a tiny
    one. ``timm_names``: saved as the Hub's DETR checkpoints are, its config naming timm's ResNet
    (``use_timm_backbone``) and the backbone's weights under timm's names (``conv1``, ``layer1.0.downsample.0``...).
    """
    import json

    from safetensors.torch import load_file, save_file
    from transformers import DetrConfig, DetrForSegmentation, ResNetConfig
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    torch.manual_seed(seed)
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if resnet is None:
        backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=stages)
    else:
        block, depths = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet50": ("bottleneck", [3, 4, 6, 3])}[resnet]
        backbone = ResNetConfig(embedding_size=64, depths=depths, layer_type=block, out_features=stages,
                                hidden_sizes=[64, 128, 256, 512] if block == "basic" else [256, 512, 1024, 2048])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=32,
                        encoder_layers=1, decoder_layers=1, encoder_attention_heads=8, decoder_attention_heads=8,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10, num_labels=5,
                        id2label={i: f"obj{i}" for i in range(5)}, label2id={f"obj{i}": i for i in range(5)})
    model = DetrForSegmentation(config).eval()
    with torch.no_grad():
        model.detr.class_labels_classifier.weight.mul_(40)
        if resnet is not None:  # a big random backbone gives every query the same output: its first class wins
            model.detr.class_labels_classifier.bias[0] += 10
    model.save_pretrained(folder)
    DetrImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    if timm_names:
        if resnet is None:
            raise ValueError("timm_names needs resnet= (timm's ResNets have fixed shapes)")
        weights = folder / "model.safetensors"
        save_file({_timm_name(k): v for k, v in load_file(str(weights)).items()}, str(weights), metadata={"format": "pt"})
        saved = json.loads((folder / "config.json").read_text())
        saved.pop("backbone_config")  # as the Hub's config.json: the backbone named, timm's
        saved.update(backbone=resnet, use_timm_backbone=True, use_pretrained_backbone=True, backbone_kwargs=None,
                     dilation=False, num_channels=3)
        (folder / "config.json").write_text(json.dumps(saved, indent=2))
    return folder


def _timm_name(key: str) -> str:
    """transformers' ResNet weight name -> timm's, inside DETR's checkpoint."""
    import re

    key = re.sub(r"conv_encoder\.model\.embedder\.embedder\.convolution\.", "conv_encoder.model.conv1.", key)
    key = re.sub(r"conv_encoder\.model\.embedder\.embedder\.normalization\.", "conv_encoder.model.bn1.", key)
    key = re.sub(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(convolution|normalization)\.",
                 lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.{0 if m[3] == 'convolution' else 1}.", key)
    return re.sub(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.(convolution|normalization)\.",
                  lambda m: f"layer{int(m[1]) + 1}.{m[2]}.{'conv' if m[4] == 'convolution' else 'bn'}{int(m[3]) + 1}.",
                  key)


def save_tiny_oneformer(folder: Path, *, seed: int = 0) -> Path:
    """A real OneFormerForUniversalSegmentation (random weights, Swin backbone) with its processor and a
    CLIP tokenizer whose small vocabulary spells the task inputs ("the task is panoptic"...). The class
    head is scaled by 200 so that some queries are confident (see save_tiny_mask2former)."""
    import json

    from transformers import CLIPTokenizer, OneFormerConfig, OneFormerForUniversalSegmentation, OneFormerProcessor
    from transformers.models.oneformer.image_processing_pil_oneformer import OneFormerImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    words = ["the", "task", "is", "semantic", "instance", "panoptic", "a", "an", "photo"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(set("".join(words))):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in words:  # merge each word left to right into one token
        toks = list(w[:-1]) + [w[-1] + "</w>"]
        while len(toks) > 1:
            merges.append(f"{toks[0]} {toks[1]}")
            vocab.setdefault(toks[0] + toks[1], len(vocab))
            toks = [toks[0] + toks[1]] + toks[2:]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))

    torch.manual_seed(seed)
    backbone = {"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                "window_size": 4, "image_size": 64, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
    config = OneFormerConfig(backbone_config=backbone, num_labels=4, hidden_dim=32, num_queries=10, encoder_layers=1,
                             decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2,
                             mask_dim=32, conv_dim=32, text_encoder_width=32, text_encoder_context_length=16,
                             text_encoder_num_layers=1, text_encoder_vocab_size=len(vocab), task_seq_len=16,
                             max_seq_len=16, text_encoder_proj_layers=1, is_training=False,
                             id2label={i: f"thing{i}" for i in range(4)}, label2id={f"thing{i}": i for i in range(4)})
    model = OneFormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        model.model.transformer_module.decoder.class_embed.weight.mul_(200)
    model.save_pretrained(folder)
    OneFormerProcessor(image_processor=OneFormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}),
                       tokenizer=tokenizer, max_seq_length=16, task_seq_length=16).save_pretrained(folder)
    return folder


def save_tiny_clipseg(folder: Path, *, seed: int = 0) -> Path:
    """A CLIPSeg with random weights, its tokenizer built in memory from a character vocabulary, and a 64x64
    ViT image processor: loaded as users load CIDAS/clipseg-rd64-refined."""
    import string

    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer, ViTImageProcessorPil

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + " ,.-'":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    config = CLIPSegConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=16, extract_layers=[0, 1, 2], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32)
    torch.manual_seed(seed)
    CLIPSegForImageSegmentation(config).eval().save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 64, "width": 64}, image_mean=[0.485, 0.456, 0.406],
                         image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def save_tiny_sam2(folder: Path, *, seed: int = 0, size: int = 128) -> Path:
    """A SAM 2 video model with random weights: the Hiera backbone, memory attention and memory encoder of
    facebook/sam2.1-hiera-tiny's design, scaled down (128x128 input, 1.4 M parameters)."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    s = size
    config = Sam2VideoConfig(
        vision_config=dict(
            backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=16, image_size=[s, s],
                                 blocks_per_stage=[1, 2, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                 num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[8, 4, 4, 2],
                                 global_attention_blocks=[2, 4], window_positional_embedding_background_size=[2, 2]),
            backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=128,
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]),
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, mlp_dim=128,
                                 iou_head_hidden_dim=32),
        image_size=s, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128, memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64)
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    with torch.no_grad():  # random weights score every object as absent: lift the object score so they show
        model.mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    model.save_pretrained(folder)
    return folder


MODELS: dict[str, Callable[[Path], Path]] = {  # what ``python -m streamseg.testing models DIR`` writes
    "segformer": save_tiny_segformer,
    "mask2former": save_tiny_mask2former,
    "detr-panoptic": save_tiny_detr_panoptic,
    "oneformer": save_tiny_oneformer,
    "clipseg": save_tiny_clipseg,
    "sam2": save_tiny_sam2,
}


def save_all(folder: Path) -> dict[str, Path]:
    """Every model of :data:`MODELS` into ``folder/NAME``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: save(folder / name) for name, save in MODELS.items()}

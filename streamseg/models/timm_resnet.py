"""Checkpoints whose config names a timm ResNet backbone (the Hub's DETR: ``facebook/detr-resnet-50-panoptic``,
the default of transformers' ``image-segmentation`` pipeline), loaded into transformers' own ResNet backbone.

timm is not needed: the two ResNets are the same network (v1.5: the stride in the 3x3 convolution, frozen batch
norms in DETR) under other weight names, so the config's backbone is swapped for a :class:`ResNetConfig` of the
same depth and the weights are renamed as they load (``from_pretrained(key_mapping=...)``). Installing timm beside
a CPU torch pulls torchvision and a CUDA torch of another version; this keeps the seed's model on a plain install.
"""

from __future__ import annotations

import copy

# timm name -> (block, depths): the torchvision-style ResNets timm's plain names stand for
RESNETS: dict[str, tuple[str, list[int]]] = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}
_PREFIX = r"conv_encoder\.model\."  # where DETR's checkpoints keep the backbone (timm's names below it)
_NATIVE = "conv_encoder.model."


def timm_resnet_name(hf_config: object) -> str | None:
    """The timm ResNet a model's config names as its backbone (``resnet50``...), or None."""
    backbone = getattr(hf_config, "backbone_config", None)
    if getattr(backbone, "model_type", None) != "timm_backbone":
        return None
    name = str(getattr(backbone, "backbone", "") or "")
    return name.split(".")[0] if name.split(".")[0] in RESNETS else None  # resnet50.a1_in1k: same shapes


def native_resnet(hf_config: object) -> tuple[object, dict[str, str]] | None:
    """For a config naming a timm ResNet backbone that transformers' ResNet can stand in for: a copy of the
    config with that backbone, and the ``key_mapping`` from timm's weight names to it. None otherwise (another
    timm network, or a dilated ResNet such as DETR-DC5, which the native backbone does not build)."""
    from transformers import ResNetConfig

    name = timm_resnet_name(hf_config)
    backbone = getattr(hf_config, "backbone_config", None)
    if name is None or getattr(backbone, "output_stride", None) or getattr(hf_config, "dilation", False):
        return None
    block, depths = RESNETS[name]
    sizes = [64, 128, 256, 512] if block == "basic" else [256, 512, 1024, 2048]
    indices = list(getattr(backbone, "out_indices", None) or [1, 2, 3, 4])
    native = ResNetConfig(num_channels=getattr(backbone, "num_channels", 3), embedding_size=64, hidden_sizes=sizes,
                          depths=depths, layer_type=block, out_features=[f"stage{i}" for i in indices])
    config = copy.deepcopy(hf_config)
    config.backbone_config = native
    config.use_pretrained_backbone = False
    return config, key_mapping(len(depths), 3 if block == "bottleneck" else 2)


def key_mapping(stages: int, convs: int) -> dict[str, str]:
    """timm's ResNet weight names (``conv1``, ``bn1``, ``layerN.M.convK``/``bnK``, ``layerN.M.downsample.0/1``)
    -> transformers' (``embedder.embedder.*``, ``encoder.stages.N-1.layers.M.layer.K-1.*``, ``...shortcut.*``)."""
    stem = _NATIVE + "embedder.embedder."
    mapping = {_PREFIX + r"conv1\.": stem + "convolution.", _PREFIX + r"bn1\.": stem + "normalization."}
    for n in range(1, stages + 1):
        layer, stage = _PREFIX + rf"layer{n}\.(\d+)\.", _NATIVE + rf"encoder.stages.{n - 1}.layers.\1."
        mapping[layer + r"downsample\.0\."] = stage + "shortcut.convolution."
        mapping[layer + r"downsample\.1\."] = stage + "shortcut.normalization."
        for k in range(1, convs + 1):
            mapping[layer + rf"conv{k}\."] = stage + f"layer.{k - 1}.convolution."
            mapping[layer + rf"bn{k}\."] = stage + f"layer.{k - 1}.normalization."
    return mapping

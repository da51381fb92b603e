"""``python -m streamseg.testing models DIR``: the README's way to try every family offline."""

from __future__ import annotations

import numpy as np

from streamseg.config import ModelConfig
from streamseg.models.segmenter import Segmenter
from streamseg.testing.__main__ import main
from streamseg.testing.models import MODELS


def test_the_models_command_saves_every_family_and_each_loads_as_a_users_model(tmp_path, capsys):
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MODELS)
    assert f"--model {tmp_path / 'clipseg'} --prompt" in out and f"--model {tmp_path / 'sam2'} --point" in out
    frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    for name, extra in (("segformer", {}), ("mask2former", {}), ("clipseg", {"prompts": "person, car"})):
        segmenter = Segmenter.load(ModelConfig(name=str(tmp_path / name), device="cpu", **extra))
        (labels,) = segmenter([frame])
        assert labels.shape == (48, 80), name
    prompted = Segmenter.load(ModelConfig(name=str(tmp_path / "clipseg"), device="cpu", prompts="person, car"))
    assert prompted.head.prompt_control.prompts == ("person", "car")

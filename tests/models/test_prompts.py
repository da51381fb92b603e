"""Text prompts with CLIPSeg: labels equal to transformers' own forward, the encoder once per frame, prompts that
change while a run goes (also through the live view's POST /prompt), and one-line errors for bad input."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli_process, run_cli

from streamseg.cli import main as cli_main
from streamseg.config import ModelConfig
from streamseg.frames import Frame
from streamseg.models.segmenter import Segmenter
from streamseg.testing.scenes import scene

PROMPTS = ("person", "red car", "tree")


def reference_labels(segmenter: Segmenter, image: np.ndarray, prompts, threshold: float) -> tuple[np.ndarray, torch.Tensor]:
    """transformers' forward as its docs show it (the frame repeated once per prompt), on the same pixel values,
    then the per-pixel rule: the most probable prompt if its probability is at least ``threshold``, else -1."""
    head = segmenter.head
    model, tokenizer = head.eager_model, head.tokenizer
    pixel_values = segmenter.preprocess([image])
    tokens = tokenizer(list(prompts), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                       pixel_values=pixel_values.repeat(len(prompts), 1, 1, 1)).logits  # (P, h, w)
    # Each pixel's probability: the sigmoid of its logit upsampled to the source size (bilinear).
    probs = F.interpolate(logits[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0].sigmoid()
    best = probs.max(0)
    labels = torch.where(best.values >= threshold, best.indices, -1)
    return labels.numpy(), logits


@pytest.fixture(scope="module")
def segmenter(tiny_clipseg):
    return Segmenter.load(ModelConfig(name=str(tiny_clipseg), device="cpu", prompts=PROMPTS))


def test_labels_equal_the_reference_forward_and_the_threshold_decides_what_is_left_out(tiny_clipseg, segmenter):
    frames = [Frame(image=scene(seed, 160, 96)[0], index=k) for k, seed in enumerate((1, 2, 3))]
    results = segmenter.segment(frames)
    seen = set()
    for frame, result in zip(frames, results):
        expected, ref_logits = reference_labels(segmenter, frame.image, PROMPTS, 0.5)
        ours = segmenter.forward(segmenter.preprocess([frame.image]))[0, :len(PROMPTS)]
        assert torch.allclose(ours, ref_logits, atol=1e-5)  # the decoder per prompt on one encoder pass
        same = (result.label_map == expected).mean()
        assert same >= 0.999, same  # upsampled_argmax: exact but for ties at cell borders
        seen |= set(np.unique(result.label_map).tolist())
        assert result.id2label == dict(enumerate(PROMPTS))
        labels = {seg.label for seg in result.segments()}
        assert labels <= set(PROMPTS)
    assert -1 in seen and len(seen & {0, 1, 2}) >= 2  # some pixels reach no prompt, the others split
    strict = Segmenter.load(ModelConfig(name=str(tiny_clipseg), device="cpu", prompts=PROMPTS, prompt_threshold=0.99))
    labels = strict.segment(frames[:1])[0].label_map
    assert (labels == reference_labels(strict, frames[0].image, PROMPTS, 0.99)[0]).mean() >= 0.999
    assert (labels == -1).mean() > (results[0].label_map == -1).mean()  # a higher threshold leaves out more


def test_the_vision_encoder_runs_once_per_frame_and_the_text_once_per_prompt_set(tiny_clipseg):
    seg = Segmenter.load(ModelConfig(name=str(tiny_clipseg), device="cpu", prompts=("a", "b", "c", "d")))
    model = seg.head.eager_model
    calls = {"vision": [], "text": []}
    model.clip.vision_model.register_forward_hook(lambda m, args, kw, out: calls["vision"].append(kw.get(
        "pixel_values", args[0] if args else None).shape[0]), with_kwargs=True)
    model.clip.text_model.register_forward_hook(lambda m, args, kw, out: calls["text"].append(1), with_kwargs=True)
    frames = [Frame(image=scene(s, 120, 80)[0], index=s, source=s % 2) for s in range(3)]  # two sources
    for _ in range(2):
        results = seg.segment(frames)
    assert calls == {"vision": [3, 3], "text": []}  # one encoder pass per batch of 3 frames; text cached
    seg.head.set_prompts("dog, cat")  # from another thread, e.g. POST /prompt
    assert seg.segment(frames[:1])[0].id2label == {0: "dog", 1: "cat"}
    assert calls["text"] == [1] and calls["vision"] == [3, 3, 1]
    assert results[0].id2label == {0: "a", 1: "b", 2: "c", 3: "d"}  # earlier results keep their own names


def test_prompts_run_through_the_cli_into_the_json_and_bad_combinations_are_one_line(tiny_clipseg, tiny_model, tmp_path,
                                                                                      capsys):
    from conftest import SAMPLE_CLIP

    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    proc = run_cli(str(SAMPLE_CLIP), "--model", str(tiny_clipseg), "--prompt", "person, car,person", "-o", str(out),
                   "--json", str(jsonl), "--duration", "1", "--legend", "-q")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 25
    labels = {s["label"] for r in records for s in r["segments"]}
    assert labels and labels <= {"person", "car"}
    cases = [
        (["--model", str(tiny_model), "--prompt", "person"], "--prompt needs a model that takes text"),
        (["--model", str(tiny_clipseg)], "segments what it is told: give --prompt"),
        (["--model", str(tiny_clipseg), "--prompt", " , "], "--prompt needs at least one text"),
        (["--model", str(tiny_clipseg), "--prompt", "a", "--prompt-threshold", "1.5"], "invalid --prompt-threshold"),
    ]
    for args, message in cases:  # in this process (the CLI's main): an interpreter per case would cost 20 s
        capsys.readouterr()
        code = cli_main([str(SAMPLE_CLIP), *args, "-o", str(tmp_path / "x.mp4")])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("streamseg:")]
        assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_live_view_changes_the_prompts_while_the_run_goes(tiny_clipseg, tmp_path):
    from streamseg.testing.streams import SyntheticStreams

    jsonl = tmp_path / "live.jsonl"
    with SyntheticStreams(1, fps=10) as cams, cli_process(
            cams.urls[0], "--model", str(tiny_clipseg), "--prompt", "person", "--serve", "127.0.0.1:0",
            "--serve-token", "t0k", "--json", str(jsonl), "--no-display", "-q") as proc:
        line = proc.stderr.readline()
        while line and not line.startswith("streamseg: live view:"):
            line = proc.stderr.readline()
        base = re.search(r"(http://[\d.:]+/)", line).group(1)
        page = urllib.request.urlopen(f"{base}?token=t0k", timeout=5).read().decode()
        assert 'id="q"' in page and 'value="person"' in page
        assert _post(f"{base}prompt", b'{"prompt": "x"}')[0] == 403  # no token
        assert _post(f"{base}prompt?token=t0k", b"prompt=x", "application/x-www-form-urlencoded")[0] == 415
        assert _post(f"{base}prompt?token=t0k", b'{"prompt": " , "}')[0] == 400
        code, answer = _post(f"{base}prompt?token=t0k", b'{"prompt": "dog, red car"}')
        assert code == 200 and answer["prompts"] == ["dog", "red car"]
        deadline = __import__("time").monotonic() + 30
        while True:
            stats = json.loads(urllib.request.urlopen(f"{base}stats?token=t0k", timeout=5).read())
            if stats["prompt_changes"] == 1 or __import__("time").monotonic() > deadline:
                break
        assert stats["prompts"] == ["dog", "red car"] and stats["prompt_changes"] == 1
        __import__("time").sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "prompts changed to: dog, red car" in err
    labels = [{s["label"] for s in json.loads(line)["segments"]} for line in jsonl.read_text().splitlines()]
    first_new = next(k for k, names in enumerate(labels) if names & {"dog", "red car"})
    assert all(names <= {"person"} for names in labels[:first_new])  # before: the old prompt only
    assert all(names <= {"dog", "red car"} for names in labels[first_new:])  # from the next batch on: the new ones


def test_a_prompt_longer_than_the_model_reads_is_cut_with_one_warning_never_a_crash(tiny_clipseg, tmp_path):
    long = "a person walking a very small dog along the road beside the parked cars at the end of a day x"
    assert len(long) > 64  # the tiny CLIPSeg reads 64 tokens, one a character
    out = tmp_path / "seg.jsonl"
    proc = run_cli("sample_media/street.mp4", "--model", str(tiny_clipseg), "--prompt", f"{long}, car", "--json",
                   str(out), "--duration", "0.2", "-q", "--no-display")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "longer than the model reads" in line]
    assert len(warnings) == 1 and "at most 64" in warnings[0]
    assert len(out.read_text().splitlines()) == 5


def test_the_live_views_long_prompt_is_checked_before_it_is_accepted_and_the_run_goes_on(tiny_clipseg, caplog):
    segmenter = Segmenter.load(ModelConfig(name=str(tiny_clipseg), device="cpu", prompts="car"))
    control = segmenter.head.prompt_control
    long = "x" * 150
    with caplog.at_level("WARNING"):
        assert control.set_prompts(f"person, {long}") == ("person", long)  # what POST /prompt answers 200 for
    assert sum("longer than the model reads" in r.getMessage() for r in caplog.records) == 1
    frame = Frame(index=0, image=scene(0, 160, 96)[0])
    (result,) = segmenter.segment([frame])  # the change applies here, on the inference thread: no crash
    assert result.id2label == {0: "person", 1: long} and control.changes == 1

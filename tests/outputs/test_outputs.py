"""One rule for output folders, applied to every output, and a ``wrote`` line that lists every file written."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_CLIP, SAMPLE_IMAGE, decode

from streamseg.cli import main


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamseg: error: "), err
    return err[0]


@pytest.mark.parametrize("flag, path", [("-o", "missing/o.mp4"), ("--json", "missing/seg.jsonl"),
                                        ("--masks", "missing/masks"), ("-o", "missing/frames")])
def test_an_output_whose_folder_is_missing_is_refused_in_one_line(flag, path, tiny_model, tmp_path, capsys):
    argv = [str(SAMPLE_CLIP), "--model", str(tiny_model), "-q", "--no-display", flag, str(tmp_path / path)]
    assert main(argv) == 2
    assert _one_error(capsys) == f"streamseg: error: output folder does not exist: {tmp_path / 'missing'} " \
                                 f"(for {tmp_path / path})"
    assert not (tmp_path / "missing").exists()


def test_every_file_written_is_listed_and_a_folder_output_is_created(tiny_model, tmp_path, capsys):
    argv = [str(SAMPLE_CLIP), "-o", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "seg.jsonl"),
            "--masks", str(tmp_path / "masks"), "--model", str(tiny_model), "-q", "--duration", "0.4"]
    assert main(argv) == 0
    wrote = capsys.readouterr().err.strip().splitlines()[-1]
    assert wrote == (f"streamseg: wrote 12 files: {tmp_path / 'o.mp4'}, {tmp_path / 'seg.jsonl'}, "
                     f"{tmp_path / 'masks'}/ (10 files)")
    assert len(decode(tmp_path / "o.mp4")[0]) == 10 and len(list((tmp_path / "masks").iterdir())) == 10
    assert len((tmp_path / "seg.jsonl").read_text().splitlines()) == 10


def test_a_folder_output_is_created_when_its_parent_exists(tiny_model, tmp_path, capsys):
    out = tmp_path / "frames"
    assert main([str(SAMPLE_IMAGE), "-o", str(out), "--model", str(tiny_model), "-q"]) == 0
    assert [p.name for p in out.iterdir()] == ["street.png"]
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"streamseg: wrote {out / 'street.png'}"


def test_two_outputs_on_one_path_are_refused(tiny_model, tmp_path, capsys):
    shared = tmp_path / "shared"
    assert main([str(SAMPLE_CLIP), "-o", str(shared), "--masks", str(shared), "--model", str(tiny_model), "-q"]) == 2
    assert _one_error(capsys) == f"streamseg: error: --masks {shared} is also -o {shared}: give each output its own path"


def test_json_onto_a_folder_is_one_line(tiny_model, tmp_path, capsys):
    assert main([str(SAMPLE_CLIP), "--json", str(tmp_path), "--model", str(tiny_model), "-q", "--no-display"]) == 2
    assert _one_error(capsys) == f"streamseg: error: output is a folder, not a file: {tmp_path}"


def test_a_model_folder_without_config_says_so(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert main([str(SAMPLE_CLIP), "--model", str(tmp_path), "-q", "--json", str(tmp_path / "o.jsonl")]) == 2
    assert _one_error(capsys) == (f"streamseg: error: model folder {str(tmp_path)!r} has no config.json: it is not a "
                                  "saved Hugging Face model (save one with save_pretrained, or give a Hub id)")


def test_json_lines_per_source_and_the_summary_per_source(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(SAMPLE_CLIP), str(SAMPLE_IMAGE), "-o", str(out), "--json", str(tmp_path / "seg.jsonl"),
                 "--model", str(tiny_model), "-q", "--duration", "0.2"]) == 0
    err = capsys.readouterr().err
    assert "[street] frames read 5, written 5" in err and "[street-1] frames read 1, written 1" in err
    assert [json.loads(line)["frame"] for line in (tmp_path / "seg-street.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert len((tmp_path / "seg-street-1.jsonl").read_text().splitlines()) == 1
    assert f"{tmp_path / 'seg-street.jsonl'}" in err.strip().splitlines()[-1]

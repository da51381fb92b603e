"""The command line's shape: subcommands, grouped help, and the same flags taken the same way by every command."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import ROOT

from streamseg.cli import main
from streamseg.cli.configs import batch_config, run_config
from streamseg.cli.parser import build_parser, parse
from streamseg.config import Style


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _group(parser: argparse.ArgumentParser, title: str) -> dict[str, argparse.Action]:
    (group,) = [g for g in parser._action_groups if g.title == title]
    return {a.dest: a for a in group._group_actions}


def test_help_is_grouped_and_names_every_command():
    proc = subprocess.run([sys.executable, "-m", "streamseg", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    for heading in ("input:", "model:", "drawing:", "outputs:", "messages:"):
        assert f"\n{heading}\n" in proc.stdout
    for command in ("streamseg [run] INPUT", "streamseg batch INPUTS", "streamseg bench"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["run", "batch", "bench"])
def test_every_option_of_every_command_says_what_it_does(command):
    parser = _subparsers(build_parser())[command]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "``" not in action.help, f"{command} {action.option_strings}: {action.help!r}"
    assert "``" not in (parser.description or "")


@pytest.mark.parametrize("group", ["model", "drawing"])
def test_batch_takes_every_model_and_drawing_flag_as_run_does(group):
    commands = _subparsers(build_parser())
    run, batch = _group(commands["run"], group), _group(commands["batch"], group)
    assert set(run) == set(batch)
    for dest, action in run.items():
        other = batch[dest]
        assert (other.option_strings, other.default, other.choices, other.type) == \
               (action.option_strings, action.default, action.choices, action.type), dest


def test_batch_builds_the_same_render_config_as_run(tmp_path):
    flags = ["--style", "blur-background", "--keep", "person,car", "--alpha", "0.7", "--legend", "--labels",
             "--classes", "person", "--compile", "--engine", "torch", "--smooth", "0.5"]
    run = run_config(parse(["clip.mp4", *flags]))
    batch = batch_config(parse(["batch", "clip.mp4", "-o", str(tmp_path), *flags]))
    assert batch.render == run.render and batch.render.style is Style.BLUR_BACKGROUND
    assert batch.render.keep == ("person", "car")
    assert batch.model == run.model and batch.model.compile and batch.model.smooth == 0.5


def test_batch_style_needing_keep_is_one_line_before_ray_starts(capsys, tmp_path):
    assert main(["batch", "clip.mp4", "-o", str(tmp_path / "out"), "--style", "blur-background", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["streamseg: error: --style blur-background needs --keep CLASS[,CLASS...] (e.g. --keep person)"]


def test_no_command_is_run_and_commands_are_not_inputs():
    assert parse(["clip.mp4", "-o", "x.mp4"]).command == "run"
    assert parse(["run", "clip.mp4"]).input == ["clip.mp4"]
    assert parse(["batch", "a.mp4", "-o", "out"]).command == "batch"
    assert parse(["bench", "--frames", "4"]).frames == 4 and parse(["bench"]).batch_size == 8

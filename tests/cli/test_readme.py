"""The README's Python example runs as written."""

import re
import runpy

from conftest import ROOT


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(ROOT)
    for i, code in enumerate(blocks):
        script = tmp_path / f"example{i}.py"
        script.write_text(code)
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("(360, 640) [")
    assert out[1] == "100 ['street.mp4', 'street.jsonl']"  # the whole run: every frame, both outputs
    assert out[-1].startswith("99 3.96 [")

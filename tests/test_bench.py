"""The benchmark harness runs end to end (tiny workload) and reports every row and ratio. No timing is asserted."""

import json

from conftest import SAMPLE_CLIP
from streamseg.cli import main


def test_bench_writes_every_row_and_ratio(tiny_model, tmp_path, capsys):
    assert main(["bench", "--model", str(tiny_model), "--video", str(SAMPLE_CLIP), "--frames", "8",
                 "--naive-frames", "2", "--repeats", "1", "--batch-size", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for row in ("naive", "decode", "forward", "inference", "render", "encode", "streamseg"):
        assert f"\n{row} " in out
    (result_file,) = tmp_path.glob("*.json")
    data = json.loads(result_file.read_text())
    assert set(data["rows"]) == {"naive", "decode", "forward", "inference", "render", "encode", "streamseg"}
    assert all(v > 0 for v in data["rows"].values()) and len(data["ratios"]) == 4
    assert data["workload"]["frames"] == 8 and data["workload"]["width"] == 640
    assert data["versions"]["torch"] and data["machine"]["cpus"]

"""The benchmark harness runs end to end (tiny workload) and reports every row and ratio. No timing is asserted."""

import json

from conftest import SAMPLE_CLIP

from streamseg.cli import main


def test_bench_writes_every_row_and_ratio(tiny_model, tmp_path, capsys):
    assert main(["bench", "--model", str(tiny_model), "--video", str(SAMPLE_CLIP), "--frames", "8",
                 "--naive-frames", "2", "--repeats", "1", "--batch-size", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = ("naive", "decode", "forward", "inference", "render", "encode", "streamseg", "e2e idle", "e2e loaded",
            "e2e idle (library threads)", "e2e loaded (library threads)")
    for row in rows:
        assert f"\n{row} " in out
    (result_file,) = tmp_path.glob("*.json")
    data = json.loads(result_file.read_text())
    assert set(data["rows"]) == set(rows)
    assert all(v > 0 for v in data["rows"].values()) and len(data["ratios"]) == 7
    assert data["ratios"]["e2e loaded / e2e idle"] == data["rows"]["e2e loaded"] / data["rows"]["e2e idle"]
    assert data["workload"]["frames"] == 8 and data["workload"]["width"] == 640
    assert data["versions"]["torch"] and data["machine"]["cpus"]

"""The benchmark harness runs end to end (tiny workload) and reports every row and ratio. No timing is asserted."""

import json

from conftest import SAMPLE_CLIP

from streamseg.cli import main


def test_bench_writes_every_row_and_ratio(tiny_model, tmp_path, capsys):
    assert main(["bench", "--model", str(tiny_model), "--video", str(SAMPLE_CLIP), "--frames", "8",
                 "--naive-frames", "2", "--repeats", "1", "--batch-size", "4", "--out", str(tmp_path),
                 "--engine", "torch", "--engines", "openvino:float32"]) == 0
    out = capsys.readouterr().out
    rows = ("naive", "decode", "forward", "inference", "render", "encode", "streamseg", "e2e idle", "e2e loaded",
            "e2e idle (library threads)", "e2e loaded (library threads)")
    engine_rows = tuple(f"{row} [openvino f32]" for row in ("forward", "streamseg", "command", "command loaded",
                                                             "start-up seconds"))
    for row in rows + engine_rows:
        assert f"\n{row} " in out
    (result_file,) = tmp_path.glob("*.json")
    data = json.loads(result_file.read_text())
    assert set(data["rows"]) == set(rows + engine_rows)
    assert all(v > 0 for v in data["rows"].values()) and len(data["ratios"]) == 7 + 4
    assert data["ratios"]["e2e loaded / e2e idle"] == data["rows"]["e2e loaded"] / data["rows"]["e2e idle"]
    assert data["ratios"]["command/naive [openvino f32]"] == data["rows"]["command [openvino f32]"] / data["rows"]["naive"]
    assert data["workload"]["frames"] == 8 and data["workload"]["width"] == 640 and data["workload"]["engine"] == "torch"
    assert data["versions"]["torch"] and data["machine"]["cpus"]

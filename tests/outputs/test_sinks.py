"""Every sink and export, written then read back: frame counts, timestamps, pixels, audio, what ``written`` lists."""

from __future__ import annotations

import json
from fractions import Fraction
from urllib.request import urlopen

import av
import cv2
import numpy as np
import pytest
from conftest import SAMPLE_CLIP, decode, scene_frames
from PIL import Image

from streamseg.errors import OutputError
from streamseg.frames import Frame, SegmentationResult
from streamseg.outputs.exports import JsonLinesExport, MaskPngExport, read_mask_png
from streamseg.outputs.images import ImageSink
from streamseg.outputs.sinks import NullSink, TeeSink
from streamseg.outputs.video import SegmentedVideoSink, VideoFileSink
from streamseg.render.renderer import palette
from streamseg.serve.server import PreviewServer

TB = Fraction(1, 1000)


def frames(n: int, *, start_ms: int = 0, step_ms: int = 40, width: int = 96, height: int = 64) -> list[Frame]:
    images = scene_frames(n, width, height)
    return [Frame(index=i, image=img, pts=start_ms + i * step_ms, time_base=TB) for i, img in enumerate(images)]


def test_video_file_keeps_count_timestamps_pixels_and_copies_audio(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"an older output")
    given = frames(20)
    with VideoFileSink(out, audio_from=str(SAMPLE_CLIP), fps=25) as sink:
        for f in given:
            sink.write(f)
        # Written beside it under a temporary name; the older file is untouched until this one is complete.
        assert sink.written == [] and out.read_bytes() == b"an older output"
        assert sorted(p.name for p in tmp_path.iterdir()) == [".v.partial.mp4", "v.mp4"]
    assert sink.written == [out] and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    images, times = decode(out)
    assert len(images) == 20 and times == pytest.approx([i * 0.04 for i in range(20)])
    err = np.abs(np.stack(images).astype(int) - np.stack([f.image for f in given]).astype(int)).mean()
    assert err < 10  # H.264 at crf 20, yuv420p, on small textured pictures
    with av.open(str(out)) as c:  # a stopped run: the audio ends with the video (0.8 s), not the source's 4 s
        a = c.streams.audio[0]
        audio = float(sum(p.duration for p in c.demux(a) if p.duration) * a.time_base)
    assert audio == pytest.approx(0.8, abs=0.1)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart


def test_a_live_video_file_is_fragmented_and_starts_at_zero(tmp_path):
    out = tmp_path / "live.mp4"
    with VideoFileSink(out, fps=25, live=True) as sink:
        for f in frames(75, start_ms=5000):  # a stream that was already running: 3 s from 5.0 s
            sink.write(f)
        assert sink.written == [out]  # in place from the start: a crash leaves it under its own name
        assert len(decode(out)[0]) >= 50  # the fragments closed so far are on disk already (2 s, 50 frames)
    images, times = decode(out)
    assert len(images) == 75 and times[0] == 0.0 and times[-1] == pytest.approx(74 * 0.04)
    assert out.read_bytes().count(b"moof") >= 2  # a fragment every 2 s keyframe


def test_an_odd_sized_frame_is_padded_and_no_frame_leaves_no_file(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoFileSink(out, fps=25) as sink:
        sink.write(Frame(index=0, image=np.full((33, 47, 3), 200, np.uint8), pts=0, time_base=TB))
    (image,), _ = decode(out)
    assert image.shape == (34, 48, 3)
    empty = tmp_path / "empty.mp4"
    with VideoFileSink(empty, fps=25) as sink:
        pass
    assert not empty.exists() and sink.written == []


def test_segments_rotate_by_time_each_starting_at_zero(tmp_path):
    with SegmentedVideoSink(tmp_path / "rec.mp4", 1.0, fps=25, live=False) as sink:
        for f in frames(60):  # 2.4 s at 25 fps
            sink.write(f)
    assert [p.name for p in sink.written] == ["rec-000.mp4", "rec-001.mp4", "rec-002.mp4"]
    counts = []
    for path in sink.written:
        _, times = decode(path)
        assert times[0] == 0.0
        counts.append(len(times))
    assert counts == [25, 25, 10]


def test_one_image_is_the_exact_picture_and_refuses_a_second(tmp_path):
    out = tmp_path / "one.png"
    (f,) = frames(1)
    with ImageSink(out, folder=False) as sink:
        sink.write(f)
        with pytest.raises(OutputError, match="holds one image"):
            sink.write(f)
    assert np.array_equal(np.asarray(Image.open(out)), f.image) and sink.written == [out]


def test_a_folder_of_images_names_frames_by_file_or_index(tmp_path):
    out = tmp_path / "pngs"
    given = frames(3)
    named = Frame(index=3, image=given[0].image, name="photo.jpg")
    with ImageSink(out, folder=True) as sink:
        for f in [*given, named]:
            sink.write(f)
    assert [p.name for p in sink.written] == ["000000.png", "000001.png", "000002.png", "photo.png"]
    for f, path in zip([*given, named], sink.written):
        assert np.array_equal(np.asarray(Image.open(path)), f.image)


def test_tee_writes_to_every_sink_and_closes_them_all_even_when_one_fails(tmp_path):
    class FailsToClose(NullSink):
        def close(self) -> None:
            raise OSError("cannot close")

    out = tmp_path / "t.mp4"
    video, null = VideoFileSink(out, fps=25), NullSink()
    tee = TeeSink([FailsToClose(), video, null])
    for f in frames(5):
        tee.write(f)
    with pytest.raises(OSError, match="cannot close"):
        tee.close()
    assert null.frames_written == 5 and len(decode(out)[0]) == 5  # the video was closed despite the failure
    assert tee.written == [out]


def test_the_live_view_serves_the_last_frame_as_jpeg():
    first, last = frames(2)
    with PreviewServer("0", quality=80) as server:
        server.write(first)
        server.write(last)
        with urlopen(server.url + "frame.jpg", timeout=5) as r:
            data = r.read()
    ok, expected = cv2.imencode(".jpg", cv2.cvtColor(last.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok and data == expected.tobytes()  # the newest frame, encoded once, served as it is
    assert server.written == []  # a view, not a file


def test_json_lines_and_mask_pngs_read_back(tmp_path):
    label_map = np.zeros((8, 10), np.uint8)
    label_map[2:5, 3:9] = 2
    result = SegmentationResult(frame=Frame(index=7, image=np.zeros((8, 10, 3), np.uint8), pts=280, time_base=TB),
                                label_map=label_map, id2label={0: "road", 2: "car"})
    with JsonLinesExport(tmp_path / "r.jsonl") as export:
        export.write(result)
    (record,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert record["frame"] == 7 and record["pts"] == pytest.approx(0.28)
    assert [(s["label"], s["area"], s["bbox"]) for s in record["segments"]] == [("road", 62, [0, 0, 10, 8]),
                                                                                ("car", 18, [3, 2, 6, 3])]
    masks = MaskPngExport(tmp_path / "m", palette(3))
    masks.write(result)
    assert masks.written == [tmp_path / "m" / "000007.png"]
    assert np.array_equal(read_mask_png(masks.written[0]), label_map)

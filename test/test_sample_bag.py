"""The sample drive bag is made from a video file: every frame, in order, resized, stamped at the video's rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from weak_fixtures import write_mp4

from wsvs_ros.messages.bag_reader import BagFrameReader, humble_typestore, open_bag
from wsvs_training.sample_bag import FRAME_ID, TOPIC, main, write_sample_bag


def _frames(count: int) -> list[np.ndarray]:
    """64x32 frames whose brightness steps with the frame index (their order can be read back)."""
    return [np.full((32, 64, 3), 20 + 40 * i, np.uint8) for i in range(count)]


def test_every_video_frame_becomes_one_jpeg_message_at_the_videos_rate(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_mp4(video, _frames(5), fps=20.0)
    assert write_sample_bag(tmp_path / "bag", video, size=(32, 16)) == 5
    typestore = humble_typestore()
    with open_bag(tmp_path / "bag", typestore) as reader:
        [connection] = reader.connections
        assert (connection.topic, connection.msgtype) == (TOPIC, "sensor_msgs/msg/CompressedImage")
        frames = BagFrameReader(reader, typestore)
        decoded = [frames.read(c, raw) for c, _, raw in reader.messages()]
    assert [rgb.shape for rgb, _, _ in decoded] == [(16, 32, 3)] * 5
    brightness = [float(rgb.mean()) for rgb, _, _ in decoded]
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 100  # in the video's order
    stamps = np.array([stamp for _, _, stamp in decoded])
    np.testing.assert_allclose(np.diff(stamps), 1 / 20, atol=1e-6)
    assert {header.frame_id for _, header, _ in decoded} == {FRAME_ID}


def test_an_existing_bag_is_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "clip.mp4"
    write_mp4(video, _frames(2))
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        write_sample_bag(tmp_path / "bag", video, size=(32, 16))
    assert main(["--video", str(video), "--out", str(tmp_path / "bag"), "--size", "32x16", "--force"]) == 0
    assert "2 frames 32x16" in capsys.readouterr().out

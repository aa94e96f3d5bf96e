"""Video decoding: real clip, sampling, and the one-line errors."""

import numpy as np
import pytest

from toolkit.core.errors import ToolkitError
from toolkit.models.svt.video import list_videos, load_clip, sample_indices, write_synthetic_clip


def test_demo_clip_normalised(shared_data):
    clip = load_clip(shared_data / "video" / "demo.mp4", 8, 96)
    assert clip.shape == (3, 8, 96, 96) and clip.dtype == np.float32
    assert -2.2 < clip.min() < 0 < clip.max() < 2.7          # ImageNet-normalised range
    assert np.std(clip[:, 0] - clip[:, -1]) > 0.05           # frames differ: really sampled


def test_uniform_sampling():
    assert sample_indices(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert sample_indices(10, 10).tolist() == list(range(10))


def test_synthetic_clip_roundtrip(tmp_path):
    p = write_synthetic_clip(tmp_path / "s.mp4", n_frames=12, size=48)
    clip = load_clip(p, 4, 32)
    assert clip.shape == (3, 4, 32, 32)


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("hello, I am text")
    with pytest.raises(ToolkitError, match="not a readable video"):
        load_clip(p)


def test_corrupt_container(tmp_path, shared_data):
    data = (shared_data / "video" / "demo.mp4").read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[:4000])
    with pytest.raises(ToolkitError, match="corrupt"):
        load_clip(p)


def test_too_few_frames_says_how_many(tmp_path):
    p = write_synthetic_clip(tmp_path / "short.mp4", n_frames=6, size=32)
    with pytest.raises(ToolkitError, match="only 6 frames but 8 were requested"):
        load_clip(p, 8, 32)


def test_empty_folder_and_bad_size(tmp_path):
    with pytest.raises(ToolkitError, match="no video files"):
        list_videos(tmp_path)
    with pytest.raises(ToolkitError, match="multiple of the 16-px patch"):
        load_clip(tmp_path / "x.mp4", 8, 100)

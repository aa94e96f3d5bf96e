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


def _torch_resize_crop(frame, size):
    """The reference the SVT weights were trained with: torch's antialiased bilinear resize."""
    import torch
    import torch.nn.functional as F

    h, w = frame.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    t = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return t[0, :, y0:y0 + size, x0:x0 + size].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape,size", [((360, 640, 3), 224), ((480, 270, 3), 32),
                                        ((100, 120, 3), 224), ((33, 47, 3), 16)])
def test_numpy_resize_matches_torch_antialias(shape, size):
    """The NumPy resize (no PyTorch at run time) is torch's antialiased bilinear, down and up."""
    from toolkit.models.svt.video import resize_crop

    frame = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    ours, ref = resize_crop(frame, size), _torch_resize_crop(frame, size)
    assert ours.shape == ref.shape == (size, size, 3)
    assert np.abs(ours - ref).max() < 0.01  # of 255: float32 rounding only

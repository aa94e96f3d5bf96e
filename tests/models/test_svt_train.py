"""SVT self-distillation on synthetic moving-shape clips: the loss falls, no collapse, resume."""

import math

import numpy as np
import pytest
import torch

from toolkit.core.errors import ToolkitError
from toolkit.models.svt.checkpoint import load_checkpoint
from toolkit.models.svt.train import TrainOptions, train, view_specs
from toolkit.models.svt.video import write_synthetic_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_synthetic_clip(d / f"c{i}.mp4", n_frames=24, size=64, seed=i)
    return d


def test_views_follow_the_paper():
    specs = view_specs(8, 224, 96)
    assert sum(s.is_global for s in specs) == 2 and len(specs) == 10
    assert {s.size for s in specs if s.is_global} == {224}
    assert {s.size for s in specs if not s.is_global} == {96}
    assert {s.frames for s in specs} == {2, 4, 8, 16}          # different frame counts
    assert len({s.span for s in specs if s.is_global}) == 2     # and rates


def test_loss_falls_without_collapse_and_resumes(clips, tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_THREADS", "1")
    out = tmp_path / "run"
    first = train(TrainOptions(data=clips, steps=30, out=out, preset="tiny", batch_size=4,
                               save_every=15))
    assert (out / "train_state.pt").is_file() and (out / "backbone" / "config.json").is_file()
    resumed = train(TrainOptions(data=clips, steps=45, out=out, preset="tiny", batch_size=4,
                                 save_every=15))
    hist = resumed["history"]
    assert [h["step"] for h in hist] == list(range(1, 46))
    assert hist[:30] == first["history"]                    # resumed, not restarted
    losses = np.array([h["loss"] for h in hist])
    assert np.isfinite(losses).all()
    assert losses[-15:].mean() < losses[:5].mean() - 0.3, losses
    assert all(h["cross_view_loss"] > 0 and h["motion_loss"] > 0 for h in hist)
    ln_k = resumed["max_entropy"]
    assert ln_k == pytest.approx(math.log(64))
    last = hist[-10:]
    # not collapsed to one prototype (batch-mean entropy far from 0) nor to uniform
    assert np.mean([h["teacher_marginal_entropy"] for h in last]) > 0.3 * ln_k
    assert np.mean([h["teacher_entropy"] for h in last]) < 0.98 * ln_k
    model, source = load_checkpoint(out / "backbone")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 64)
    with pytest.raises(ToolkitError, match="already at step 45"):
        train(TrainOptions(data=clips, steps=45, out=out, preset="tiny"))


def test_empty_data_folder(tmp_path):
    with pytest.raises(ToolkitError, match="no video files"):
        train(TrainOptions(data=tmp_path, steps=1, out=tmp_path / "o", preset="tiny"))

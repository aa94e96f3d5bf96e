"""Grad-TTS model pieces on the tiny preset: shapes, MAS, text front end, checkpoints, losses."""

import json
import shutil

import numpy as np
import pytest
import torch

from toolkit.core.errors import ToolkitError
from toolkit.models.gradtts.checkpoint import load_checkpoint, load_model, save_checkpoint
from toolkit.models.gradtts.mas import maximum_path
from toolkit.models.gradtts.model import PRESETS, build_model
from toolkit.models.gradtts.text import BLANK_ID, SYMBOLS, text_to_ids


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def brute_force_path(log_p: np.ndarray) -> tuple[float, np.ndarray]:
    """Exhaustive search over all monotonic surjective alignments (tiny sizes)."""
    tx, ty = log_p.shape
    best = (-np.inf, None)

    def rec(j, i, acc, assign):
        nonlocal best
        if j == ty:
            if i == tx - 1 and acc > best[0]:
                best = (acc, list(assign))
            return
        for ni in (i, i + 1) if j > 0 else (0,):
            if ni < tx:
                assign.append(ni)
                rec(j + 1, ni, acc + log_p[ni, j], assign)
                assign.pop()

    rec(0, 0, 0.0, [])
    path = np.zeros((tx, ty), dtype=np.float32)
    for j, i in enumerate(best[1]):
        path[i, j] = 1.0
    return best[0], path


def test_paper_preset_has_published_size():
    m = build_model(PRESETS["paper"])
    total = count_params(m) / 1e6
    assert 14.0 < total < 16.0                      # ~15 M in the paper
    assert 7.0 < count_params(m.decoder) / 1e6 < 8.0  # ~7.6 M decoder


def test_shapes_tiny():
    m = build_model(PRESETS["tiny"])
    ids = torch.randint(1, len(SYMBOLS), (2, 17))
    mu, logw, mask = m.encoder(ids, torch.tensor([17, 9]))
    assert mu.shape == (2, 80, 17) and logw.shape == (2, 1, 17) and mask.shape == (2, 1, 17)
    assert torch.all(mu[1, :, 9:] == 0) and torch.all(logw[1, :, 9:] == 0)
    for frames in (4, 36, 100):
        x = torch.randn(2, 80, frames)
        mask = torch.ones(2, 1, frames)
        mask[1, :, frames // 2:] = 0
        s = m.decoder(x, mask, x, torch.tensor([0.9, 0.1]))
        assert s.shape == (2, 80, frames)
        assert torch.all(s[1, :, frames // 2:] == 0)


@pytest.mark.parametrize("seed", range(12))
def test_mas_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    tx, ty = int(rng.integers(1, 5)), int(rng.integers(4, 8))
    lp = rng.standard_normal((tx, ty))
    best, _ = brute_force_path(lp)
    # padded batch of two: the real case and a padded copy must give the same path
    big = np.full((2, tx + 2, ty + 3), 5.0)          # large padding values must be ignored
    big[0, :tx, :ty] = lp
    big[1, :tx, :ty] = lp
    path = maximum_path(big, [tx, tx], [ty, ty])
    assert np.isclose((path[0, :tx, :ty] * lp).sum(), best)
    assert path[0].sum() == ty and path[0, tx:].sum() == 0 and path[0, :, ty:].sum() == 0
    assert np.all(path[0, :tx, :ty].sum(0) == 1)      # each frame exactly one token
    assert np.all(path[0, :tx, :ty].sum(1) >= 1)      # each token at least one frame
    np.testing.assert_array_equal(path[0], path[1])


def test_text_front_end():
    ids = text_to_ids("Hi!")
    assert ids[0::2] == [BLANK_ID] * 4 and [SYMBOLS[i] for i in ids[1::2]] == ["h", "i", "!"]
    kept = text_to_ids("Café 42", warn=True)          # é -> e, digits dropped with a warning
    assert [SYMBOLS[i] for i in kept[1::2]] == list("cafe ")
    for bad in ("", "   ", "42 ?!", "日本語"):
        with pytest.raises(ToolkitError):
            text_to_ids(bad)


def test_checkpoint_roundtrip_and_wrong_model(tmp_path):
    m = build_model(PRESETS["tiny"], seed=3)
    save_checkpoint(m, tmp_path / "ck", step=7)
    m2, meta = load_checkpoint(tmp_path / "ck")
    assert meta["step"] == 7
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    other = tmp_path / "whisper"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ToolkitError, match="another model"):
        load_checkpoint(other)
    with pytest.raises(ToolkitError, match="does not exist"):
        load_model(checkpoint=tmp_path / "nope")
    with pytest.raises(ToolkitError, match="unknown Grad-TTS preset"):
        load_model(preset="huge")


def test_losses_fall_on_real_data(shared_data):
    from toolkit.models.gradtts.data import collate, load_dataset

    items = load_dataset(shared_data / "ljspeech-mini", limit=2)
    torch.manual_seed(0)
    m = build_model(PRESETS["tiny"]).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    batch = collate(items)
    hist = []
    for i in range(12):
        g = torch.Generator().manual_seed(0)    # same t / noise every step: a fair comparison
        losses = m.compute_loss(*batch, generator=g)
        loss = sum(losses)
        hist.append([x.item() for x in losses])
        opt.zero_grad()
        loss.backward()
        opt.step()
    first, last = np.array(hist[0]), np.array(hist[-1])
    assert last.sum() < 0.8 * first.sum(), hist
    assert last[1] < first[1]      # prior loss
    assert last[2] < first[2]      # diffusion loss


def test_data_folder_errors(tmp_path, shared_data):
    from toolkit.models.gradtts.data import load_dataset

    with pytest.raises(ToolkitError, match="metadata.csv is missing"):
        load_dataset(tmp_path)
    src = shared_data / "ljspeech-mini"
    (tmp_path / "wavs").mkdir()
    shutil.copy(src / "wavs" / "LJ001-0002.wav", tmp_path / "wavs")
    (tmp_path / "wavs" / "BAD.wav").write_bytes(b"not a wav at all")
    (tmp_path / "metadata.csv").write_text("LJ001-0002|in being comparatively modern.|x\n"
                                           "MISSING|hello there.|hello there.\n")
    with pytest.raises(ToolkitError, match="MISSING.wav"):
        load_dataset(tmp_path)
    (tmp_path / "metadata.csv").write_text("BAD|hello there.|hello there.\n")
    with pytest.raises(ToolkitError, match="BAD.wav"):
        load_dataset(tmp_path)

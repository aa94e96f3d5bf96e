"""SVT backbone: positional-embedding resizing, official-layout equivalence, checkpoints."""

import numpy as np
import pytest
import torch

from toolkit.core.errors import ToolkitError
from toolkit.models.svt.checkpoint import (
    load_checkpoint,
    load_model,
    map_official_keys,
    save_checkpoint,
)
from toolkit.models.svt.model import SVTBackbone, gmac_per_clip, preset_config


@pytest.fixture(scope="module")
def tiny():
    return load_model(preset="tiny", seed=0).model


def test_pos_embedding_resize_is_identity_at_native_size(tiny):
    g = tiny.cfg.grid
    assert torch.equal(tiny.spatial_pos(g, g), tiny.pos_embed[:, 1:])
    assert torch.equal(tiny.temporal_pos(tiny.cfg.num_frames), tiny.time_embed)
    # and really resizes elsewhere
    assert tiny.spatial_pos(3, 5).shape == (1, 15, tiny.cfg.dim)
    assert tiny.temporal_pos(16).shape == (1, 16, tiny.cfg.dim)
    assert not torch.allclose(tiny.temporal_pos(2), tiny.time_embed[:, :2])


def _official_forward(m: SVTBackbone, video):
    """TimeSformer's divided attention written in its own token order: b (h w t) m."""
    b, c, t, h, w = video.shape
    p = m.cfg.patch_size
    n = (h // p) * (w // p)
    x = m.patch_embed(video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)).flatten(2).transpose(1, 2)
    cls = m.cls_token.expand(b * t, 1, -1)
    x = torch.cat([cls, x], 1) + torch.cat([m.pos_embed[:, :1], m.spatial_pos(h // p, w // p)], 1)
    cls_tokens = x[:b, 0:1]
    x = x[:, 1:]                                        # (b t) n m
    x = x.reshape(b, t, n, -1).permute(0, 2, 1, 3).reshape(b * n, t, -1) + m.temporal_pos(t)
    x = torch.cat([cls_tokens, x.reshape(b, n * t, -1)], 1)   # b (h w t) m
    for blk in m.blocks:
        xt = x[:, 1:].reshape(b * n, t, -1)
        res_t = blk.temporal_fc(blk.temporal_attn(blk.temporal_norm1(xt)).reshape(b, n * t, -1))
        xt = x[:, 1:] + res_t
        init_cls = x[:, :1]
        cls_rep = init_cls.repeat(1, t, 1).reshape(b * t, 1, -1)
        xs = xt.reshape(b, n, t, -1).permute(0, 2, 1, 3).reshape(b * t, n, -1)
        res_s = blk.attn(blk.norm1(torch.cat([cls_rep, xs], 1)))
        cls_s = res_s[:, 0].reshape(b, t, -1).mean(1, keepdim=True)
        res_s = res_s[:, 1:].reshape(b, t, n, -1).permute(0, 2, 1, 3).reshape(b, n * t, -1)
        x = torch.cat([init_cls, xt], 1) + torch.cat([cls_s, res_s], 1)
        x = x + blk.mlp(blk.norm2(x))
    return m.norm(x)[:, 0]


@pytest.mark.parametrize("t,h,w", [(4, 32, 32), (2, 48, 64), (8, 32, 16)])
def test_matches_official_token_order(tiny, t, h, w):
    x = torch.randn(2, 3, t, h, w)
    with torch.no_grad():
        torch.testing.assert_close(tiny(x), _official_forward(tiny, x), rtol=1e-4, atol=1e-5)


def test_size_not_divisible_by_patch(tiny):
    with pytest.raises(ToolkitError, match="multiple of the 16-px patch"):
        tiny(torch.randn(1, 3, 4, 40, 40))


def _official_state(model):
    """The backbone's weights in the official SVT layout (DINO teacher of a MultiCropWrapper
    around TimeSformer, saved from DDP) with the projection head and classifier present."""
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("patch_embed.", "patch_embed.proj.")
        sd[f"module.backbone.model.{k}"] = v.clone()
    sd["module.backbone.model.head.weight"] = torch.randn(400, model.cfg.dim)
    sd["module.head.mlp.0.weight"] = torch.randn(32, model.cfg.dim)
    return {"teacher": sd, "epoch": 20}


def test_official_key_mapping(tiny, tmp_path):
    raw = _official_state(tiny)
    mapped = map_official_keys(raw)
    assert "blocks.0.temporal_attn.qkv.weight" in mapped
    assert "patch_embed.weight" in mapped and "time_embed" in mapped and "cls_token" in mapped
    assert not any(k.startswith(("head", "module", "backbone", "model")) for k in mapped)
    path = tmp_path / "svt_checkpoint.pth"
    torch.save(raw, path)
    # the head count is not visible in the tensors: 64-d heads are assumed (ViT-B: 12) ...
    assert load_checkpoint(path)[0].cfg.heads == 1
    # ... and a config.json beside the official file overrides it
    (tmp_path / "config.json").write_text('{"heads": 4}')
    loaded, source = load_checkpoint(path)
    assert source["random_init"] is False and len(source["sha256"]) == 64
    assert loaded.cfg.dim == tiny.cfg.dim and loaded.cfg.depth == tiny.cfg.depth
    assert loaded.cfg.img_size == tiny.cfg.img_size and loaded.cfg.num_frames == tiny.cfg.num_frames
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny(x))


def test_save_load_roundtrip_and_bad_checkpoint(tiny, tmp_path):
    save_checkpoint(tiny, tmp_path / "ck")
    assert (tmp_path / "ck" / "config.json").is_file()
    loaded, _ = load_checkpoint(tmp_path / "ck")
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny(x))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ToolkitError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(ToolkitError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_gmac_vit_base_matches_design():
    assert 190 < gmac_per_clip(preset_config("vit-base"), 8, 224) < 200
    # counted MACs agree with the FLOPs torch counts for the tiny model
    from torch.utils.flop_counter import FlopCounterMode

    m = SVTBackbone(preset_config("tiny"))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.randn(1, 3, 4, 64, 64))
    counted = fc.get_total_flops() / 2 / 1e9
    assert abs(counted - gmac_per_clip(m.cfg, 4, 64)) / counted < 0.02
    assert np.isfinite(counted)

"""The Grad-TTS graphs as exported (tiny preset): the manifest's I/O contract and the U-Net
graph at lengths and batches other than the traced one, against PyTorch."""

import numpy as np
import pytest
import torch

from toolkit.core.errors import ToolkitError
from toolkit.core.parity import rel_l2
from toolkit.export.gradtts.plan import build_plan
from toolkit.export.manifest import load_manifest
from toolkit.export.onnx import export_plan
from toolkit.models.base import LoadedModel
from toolkit.models.gradtts.model import PRESETS, LinearAttention, build_model
from toolkit.runtime.session import OrtSession


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = build_model(PRESETS["tiny"], seed=1)
    for m in model.modules():          # open the ReZero gates so attention is exercised
        if isinstance(m, LinearAttention):
            torch.nn.init.constant_(m.g, 0.1)
    out = tmp_path_factory.mktemp("gt") / "art"
    loaded = LoadedModel("gradtts", model, {"preset": "tiny", "seed": 1, "random_init": True})
    export_plan(build_plan(loaded, sentences=["Hello there.", "A short test sentence."]), "fp32",
                out)
    return loaded, out


def test_manifest(exported):
    _, out = exported
    m = load_manifest(out, family="gradtts")
    u = m["graphs"]["unet"]
    assert [i["name"] for i in u["inputs"]] == ["x_t", "mask", "mu", "t"]
    assert u["inputs"][0]["shape"] == ["batch", 80, "frames"]
    assert u["trt_profiles"]["x_t"]["opt"] == [1, 80, 172]
    assert m["graphs"]["encoder"]["inputs"][0]["shape"] == ["batch", "tokens"]
    assert m["random_init"] is True
    with pytest.raises(ToolkitError, match="not 'whisper'"):
        load_manifest(out, family="whisper")


def test_unet_graph_runs_at_many_lengths(exported):
    model, out = exported
    sess = OrtSession(out / "unet.onnx")
    rng = np.random.default_rng(0)
    for b, frames in [(1, 4), (1, 100), (2, 36), (1, 256)]:
        x = rng.standard_normal((b, 80, frames)).astype(np.float32)
        mu = rng.standard_normal((b, 80, frames)).astype(np.float32)
        mask = np.ones((b, 1, frames), np.float32)
        t = np.full((b,), 0.3, np.float32)
        got = sess.run({"x_t": x, "mask": mask, "mu": mu, "t": t})["score"]
        with torch.no_grad():
            ref = model.model.decoder(*(torch.from_numpy(v) for v in (x, mask, mu, t))).numpy()
        assert got.shape == (b, 80, frames)
        assert rel_l2(got, ref) < 1e-4

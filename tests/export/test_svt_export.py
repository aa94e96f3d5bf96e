"""The exported SVT backbone follows the input shape: one graph, every T and size, = PyTorch."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from toolkit.export.manifest import load_manifest
from toolkit.export.onnx import export_plan
from toolkit.export.svt.plan import build_plan, real_feeds
from toolkit.models.svt.checkpoint import load_model
from toolkit.runtime.session import OrtSession


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_data):
    loaded = load_model(preset="tiny", seed=0)
    out = tmp_path_factory.mktemp("svt") / "fp32"
    export_plan(build_plan(loaded), "fp32", out)
    return loaded.model, out


@pytest.mark.parametrize("size", [32, 96])
@pytest.mark.parametrize("frames", [2, 4, 8, 16])
def test_graph_runs_at_every_T_and_size_and_matches_torch(exported, frames, size):
    model, out = exported
    sess = OrtSession(out / "backbone.onnx")
    x = np.random.default_rng(frames * size).standard_normal((2, 3, frames, size, size)).astype(np.float32)
    got = sess.run({"video": x})["cls"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert got.shape == (2, model.cfg.dim)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)


def test_graph_follows_input_shape_not_trace_shape(exported):
    model, out = exported
    m = load_manifest(out, family="svt")
    g = m["graphs"]["backbone"]
    assert g["inputs"][0]["shape"] == ["batch", 3, "frames", "height", "width"]
    assert g["trt_profiles"]["video"]["min"][2] == 2 and g["trt_profiles"]["video"]["max"][2] == 16
    assert g["trt_profiles"]["video"]["min"][3] == 96 and g["trt_profiles"]["video"]["max"][4] == 224
    ops = onnx_shape_ops(out / "backbone.onnx")
    assert ops["Resize"] == 2 and ops["Shape"] > 0      # the two embedding resizes read the shape
    # a non-square clip at a frame count never traced
    x = np.random.default_rng(0).standard_normal((1, 3, 3, 48, 80)).astype(np.float32)
    got = OrtSession(out / "backbone.onnx").run({"video": x})["cls"]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=2e-5)
    assert m["parity"]["graphs"]["backbone"]["cls"]["passed"]


def test_int8_export_from_real_clip(exported, tmp_path):
    model, _ = exported
    plan = build_plan(load_model(preset="tiny", seed=0))
    m = export_plan(plan, "int8", tmp_path / "int8")
    assert m["graphs"]["backbone"]["quantized_nodes"] > 0
    feed = real_feeds(None, [(8, 96)])[0]
    # judged on the QDQ graph's meaning (Q/DQ as float ops), the same on every CPU
    got = OrtSession(tmp_path / "int8" / "backbone.onnx", precision="int8",
                     optimization="none").run(feed)["cls"][0]
    with torch.no_grad():
        ref = model(torch.from_numpy(feed["video"])).numpy()[0]
    cos = float(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref))
    assert 0.97 < cos <= 1.0 + 1e-6


def onnx_shape_ops(path: str | Path) -> dict:
    """Counts of the ops through which the graph follows its input shape (Shape→Resize)."""
    m = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in m.graph.node]
    return {op: ops.count(op) for op in ("Shape", "Resize", "Reshape")}

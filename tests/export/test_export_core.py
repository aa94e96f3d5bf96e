"""The generic exporter on a toy two-layer model: fp32/fp16/int8, manifest, atomicity."""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from support.zoo import Toy
from support.zoo import toy_plan as _plan
from toolkit.core.errors import ToolkitError
from toolkit.export.manifest import load_manifest
from toolkit.export.onnx import control_flow_nodes, export_plan
from toolkit.runtime.session import OrtSession
from toolkit.runtime.torch_session import TorchSession


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_validates_and_writes_manifest(tmp_path, precision):
    out = tmp_path / "art"
    manifest = export_plan(_plan(), precision, out)
    m = load_manifest(out, family="toy")
    assert m["precision"] == precision and m["random_init"] is True
    g = m["graphs"]["toy"]
    assert g["inputs"][0]["shape"] == ["batch", "seq", 16]
    assert g["trt_profiles"]["x"]["max"] == [4, 64, 16]
    assert manifest["parity"]["graphs"]["toy"]["y"]["passed"]
    assert not control_flow_nodes(out / g["file"])
    if precision == "int8":
        assert g["quantized_nodes"] == 2
    if precision == "fp16":
        assert g["fp32_nodes"] >= 1  # the LayerNorm stays fp32
    # the graph runs at a shape other than the trace shape and matches torch
    x = np.random.default_rng(1).standard_normal((3, 11, 16)).astype(np.float32)
    ref = TorchSession(Toy(), ["x"], ["y"]).run({"x": x})["y"]
    # int8 is checked on what the QDQ graph means (Q/DQ as float ops), not on this CPU's fused
    # int8 kernels: those saturate on AVX2-only CPUs and differ on ARM; the exporter reports
    # their error beside the verdict
    got = OrtSession(out / g["file"], precision=precision,
                     optimization="none" if precision == "int8" else "all").run({"x": x})["y"]
    assert got.shape == (3, 11, 8)
    tol = {"fp32": 1e-5, "fp16": 1e-2, "int8": 0.2}[precision]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < tol
    if precision == "int8":
        parity = m["parity"]["graphs"]["toy"]["y"]
        assert parity["judged_on"].startswith("Q/DQ evaluated in float")
        assert parity["kernel_rel_l2"] >= 0.0


def test_failed_validation_leaves_nothing(tmp_path):
    class Broken(Toy):
        calls = 0

        def forward(self, x):  # traced graph differs from what eager returns afterwards
            Broken.calls += 1
            y = super().forward(x)[0]
            return (y + (0.0 if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() else 1.0),)

    out = tmp_path / "art"
    with pytest.raises(ToolkitError, match="validation failed"):
        export_plan(_plan(Broken()), "fp32", out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir()]  # no partial directory either


def test_manifest_refusals(tmp_path):
    out = tmp_path / "art"
    export_plan(_plan(), "fp32", out)
    with pytest.raises(ToolkitError, match="holds a 'toy' model"):
        load_manifest(out, family="whisper")
    (out / "toy.onnx").write_bytes(b"garbage")
    with pytest.raises(ToolkitError, match="sha256"):
        load_manifest(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ToolkitError, match="not valid JSON"):
        load_manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(ToolkitError, match="no manifest.json"):
        load_manifest(out)
    with pytest.raises(ToolkitError, match="does not exist"):
        load_manifest(tmp_path / "nope")


def test_unwritable_output(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ToolkitError, match="is a regular file, not a directory"):
        export_plan(_plan(), "fp32", f)


def test_an_artifact_with_a_user_file_inside_is_not_replaced(tmp_path):
    """An export replaces an artifact only if it holds nothing but the artifact's own files."""
    out = tmp_path / "art"
    export_plan(_plan(), "fp32", out)
    export_plan(_plan(), "fp32", out)               # ours: replaced
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="--force"):
        export_plan(_plan(), "fp32", out)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


class _Deep(torch.nn.Module):
    """Six 64-wide layers, one of them sensitive to int8: enough weight for a 16 KiB
    external-data threshold and a choice for the int8 layer search."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Linear(16, 64)
        self.mid = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(4))
        self.out = torch.nn.Linear(64, 8)
        # one layer made sensitive: an outlier channel (×300) in its input, undone in its
        # weight — the same function, but that input's int8 range is 300× too coarse
        scale = torch.ones(64)
        scale[0] = 300.0
        self.register_buffer("scale", scale)
        with torch.no_grad():
            self.mid[1].weight[:, 0] /= 300.0

    def forward(self, x):
        h = self.inp(x)
        for i, layer in enumerate(self.mid):
            h = h + torch.tanh(layer(h * self.scale if i == 1 else h))
        return (self.out(h),)


@pytest.mark.parametrize("twin_group_bytes", [None, 1])
def test_int8_layer_search_on_external_weights_keeps_only_its_own_data_file(
        tmp_path, monkeypatch, twin_group_bytes):
    """The layer search assembles its candidates from the fp32 and QDQ graphs' structure, with
    the float weights read through a link to the fp32 data file (``external.linked``): the
    artifact must come out with the chosen layers float, referring only to its own data file,
    and no link or candidate file may be left anywhere. The sensitivities are the same whether
    the float twins run in one session or one per layer (``TWIN_GROUP_BYTES``)."""
    from toolkit.export import external, precision

    if twin_group_bytes is not None:
        monkeypatch.setattr(precision, "TWIN_GROUP_BYTES", twin_group_bytes)

    plan = _plan(_Deep())
    plan.graphs[0] = dataclasses.replace(plan.graphs[0], int8_budget=0.03)
    out = tmp_path / "art"
    export_plan(plan, "int8", out, external_threshold=16 << 10)
    g = load_manifest(out, family="toy")["graphs"]["toy"]
    assert g["weight_layers"] == 6
    # the one layer made sensitive, and only it, stays float
    assert g["float_layers"] == ["/mid.1/MatMul"] and g["int8_error_rel_l2"] <= 0.03
    assert g["float_layer_sensitivity"]["/mid.1/MatMul"] > 0.05
    assert g["quantized_nodes"] == 5
    assert external.locations(out / "toy.onnx") == {"toy.onnx.data"}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "toy.onnx", "toy.onnx.data"]
    assert not [p for p in tmp_path.rglob("*") if "linked" in p.name or "candidate" in p.name]
    x = np.random.default_rng(1).standard_normal((2, 7, 16)).astype(np.float32)
    ref = TorchSession(_Deep(), ["x"], ["y"]).run({"x": x})["y"]
    got = OrtSession(out / "toy.onnx", precision="int8", optimization="none").run({"x": x})["y"]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05  # budget 0.03 on the calib feeds


def test_linked_repoints_external_tensors_and_removes_its_links(tmp_path):
    from toolkit.export import external

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    w = onnx.numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    external.save(onnx.helper.make_model(graph), a / "g.onnx", threshold=1024)
    with external.linked(a / "g.onnx", b) as model:
        (loc,) = {e.value for t in model.graph.initializer for e in t.external_data
                  if e.key == "location"}
        assert (b / loc).exists() and loc != "g.onnx.data"
        onnx.save(model, str(b / "probe.onnx"))
        x = np.ones((1, 64), np.float32)
        (y,) = ort.InferenceSession(str(b / "probe.onnx")).run(None, {"x": x})
        np.testing.assert_allclose(y, x @ np.arange(4096, dtype=np.float32).reshape(64, 64))
    assert sorted(p.name for p in b.iterdir()) == ["probe.onnx"]
    assert sorted(p.name for p in a.iterdir()) == ["g.onnx", "g.onnx.data"]

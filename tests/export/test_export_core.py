"""The generic exporter on a toy two-layer model: fp32/fp16/int8, manifest, atomicity."""


import numpy as np
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

"""``toolkit check-trt``: clean toy exports pass; planted TensorRT incompatibilities are caught."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from support.zoo import toy_plan as _plan
from toolkit.cli import app
from toolkit.core.files import sha256_file
from toolkit.export.check_trt import check_artifact, check_model
from toolkit.export.manifest import write_manifest
from toolkit.export.onnx import export_plan


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_clean_toy_exports_pass(tmp_path, precision):
    d = tmp_path / precision
    export_plan(_plan(), precision, d)
    findings = check_artifact(d)
    assert not [f for f in findings if f.severity == "error"], findings
    r = CliRunner().invoke(app, ["check-trt", str(d)])
    assert r.exit_code == 0, r.output
    assert "pass" in r.output and "0 error(s)" in r.output


def _planted(path):
    """One graph carrying every kind of incompatibility the checker must catch."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE, name="to_double"),
        helper.make_node("Cast", ["xd"], ["xf"], to=f, name="from_double"),
        helper.make_node("ReduceSum", ["xf"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["branch"], name="merged_decoder_if",
                         then_branch=helper.make_graph(
                             [helper.make_node("Identity", ["xf"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", f, None)]),
                         else_branch=helper.make_graph(
                             [helper.make_node("Neg", ["xf"], ["e"])], "else", [],
                             [helper.make_tensor_value_info("e", f, None)])),
        helper.make_node("Unique", ["branch"], ["u"], name="uniq"),
        helper.make_node("FusedGemm", ["xf", "w"], ["fg"], domain="com.microsoft", name="ort_fused"),
        helper.make_node("Resize", ["img", "", "scales"], ["big"], mode="cubic", name="bicubic"),
        helper.make_node("MaxPool", ["seq"], ["pooled"], kernel_shape=[3], name="pool1d"),
        helper.make_node("MatMul", ["ids", "ids2"], ["imm"], name="int_matmul"),
    ]
    g = helper.make_graph(
        nodes, "planted",
        [helper.make_tensor_value_info("x", f, ["batch", 4]),
         helper.make_tensor_value_info("img", f, [1, 3, 8, 8]),
         helper.make_tensor_value_info("seq", f, [1, 2, 16]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 2]),
         helper.make_tensor_value_info("ids2", TensorProto.INT64, [2, 2])],
        [helper.make_tensor_value_info(n, f, None) for n in ("u", "big", "pooled")] +
        [helper.make_tensor_value_info("fg", f, None),
         helper.make_tensor_value_info("imm", TensorProto.INT64, None)],
        initializer=[helper.make_tensor("zero", f, [], [0.0]),
                     helper.make_tensor("w", f, [4, 4], np.eye(4).ravel().tolist()),
                     helper.make_tensor("scales", f, [4], [1, 1, 2, 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    onnx.save(model, path)


def test_planted_incompatibilities_are_caught(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    _planted(d / "bad.onnx")
    write_manifest(d, {"family": "toy", "precision": "fp32",
                       "graphs": {"bad": {"file": "bad.onnx", "sha256": sha256_file(d / "bad.onnx"),
                                          "inputs": [], "trt_profiles": {}}}})
    findings = check_artifact(d)
    errors = {(f.node, f.op): f.problem for f in findings if f.severity == "error"}
    assert ("merged_decoder_if", "If") in errors                       # control flow
    assert any("DOUBLE" in p and n == "to_double" for (n, _), p in errors.items())  # float64
    assert ("uniq", "Unique") in errors                                # unsupported op
    assert "domain 'com.microsoft'" in errors[("ort_fused", "FusedGemm")]  # custom op
    assert "mode 'cubic'" in errors[("bicubic", "Resize")]             # attribute limitation
    assert "2D or 3D" in errors[("pool1d", "MaxPool")]
    assert "INT64" in errors[("int_matmul", "MatMul")]                 # type column
    assert "no TensorRT profile" in errors[("x", "input")]             # dynamic shape, no profile
    # no false positives on the supported nodes
    for ok in ("sum", "gt", "from_double"):
        assert not any(n == ok and "DOUBLE" not in p for (n, _), p in errors.items())
    r = CliRunner().invoke(app, ["check-trt", str(d)])
    assert r.exit_code == 1
    for word in ("merged_decoder_if", "DOUBLE", "Unique", "FAIL"):
        assert word in r.output
    r = CliRunner().invoke(app, ["check-trt", str(d), "--json"])
    assert r.exit_code == 1 and any(f["op"] == "If" for f in json.loads(r.output))


def test_profile_consistency_and_opset():
    f = TensorProto.FLOAT
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                          [helper.make_tensor_value_info("x", f, ["b", 16])],
                          [helper.make_tensor_value_info("y", f, ["b", 16])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    good = {"trt_profiles": {"x": {"min": [1, 16], "opt": [2, 16], "max": [8, 16]}}}
    assert not [x for x in check_model(model, "g", good) if x.severity != "info"]
    bad_rank = {"trt_profiles": {"x": {"min": [1], "opt": [2], "max": [8]}}}
    assert any("rank" in x.problem for x in check_model(model, "g", bad_rank))
    bad_static = {"trt_profiles": {"x": {"min": [1, 8], "opt": [2, 8], "max": [8, 8]}}}
    assert any("static axis 1" in x.problem for x in check_model(model, "g", bad_static))
    bad_order = {"trt_profiles": {"x": {"min": [4, 16], "opt": [2, 16], "max": [8, 16]}}}
    assert any("min <= opt <= max" in x.problem for x in check_model(model, "g", bad_order))
    stray = {"trt_profiles": {**good["trt_profiles"], "nope": {"min": [1], "opt": [1], "max": [1]}}}
    assert any(x.node == "nope" for x in check_model(model, "g", stray))
    model.opset_import[0].version = 22
    assert any(x.severity == "warning" and "opset 22" in x.problem for x in check_model(model, "g", good))

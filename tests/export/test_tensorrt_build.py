"""TensorRT engine building, driven through a strict double of the TensorRT 10 Python API."""

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from support import trt_double
from support.cli import fails_cleanly
from support.zoo import toy_plan as _plan
from toolkit.cli import app
from toolkit.core.errors import MissingDependency, ToolkitError
from toolkit.core.files import sha256_file
from toolkit.export.manifest import load_manifest
from toolkit.export.onnx import export_plan
from toolkit.export.tensorrt import (
    build_artifact,
    graph_profiles,
    parse_profile_overrides,
    require_tensorrt,
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy")
    return {p: (export_plan(_plan(), p, base / p), base / p) for p in ("fp32", "fp16", "int8")}


@pytest.fixture
def art(exports, tmp_path):
    """A fresh copy of an export per test (builds write engines into it)."""
    import shutil

    counter = iter(range(100))

    def copy(precision):
        dst = tmp_path / f"{precision}-{next(counter)}"
        shutil.copytree(exports[precision][1], dst)
        return dst

    return copy


@pytest.fixture
def trt(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    return trt_double.install(monkeypatch)


def _builds():
    return [d for what, d in trt_double.CALLS if what == "build_serialized_network"]


def test_double_is_strict(trt):
    """The double rejects misspelled names and wrong argument types, as the real bindings do."""
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    with pytest.raises(AttributeError):
        config.fp16_mode = True                     # TensorRT 7 API, gone in 10
    with pytest.raises(AttributeError):
        builder.build_engine                        # removed in TensorRT 10  # noqa: B018
    with pytest.raises(TypeError):
        config.set_flag("FP16")
    with pytest.raises(AttributeError):
        trt.BuilderFlag.STRICT_TYPES                # removed in TensorRT 10  # noqa: B018
    with pytest.raises(TypeError):
        config.set_memory_pool_limit(trt.BuilderFlag.FP16, 1)


def test_fp32_artifact_fp16_engine(trt, art):
    d = art("fp32")
    m = build_artifact(d, fp16=True, workspace_mb=512)
    (b,) = _builds()
    assert b["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert b["pools"] == {"WORKSPACE": 512 << 20}
    assert b["int8_calibrator"] is None
    # the manifest's profile for x: [1,1,16] / [1,5,16] / [4,64,16]
    assert b["profiles"] == [{"x": ((1, 1, 16), (1, 5, 16), (4, 64, 16))}]
    # LayerNorm pinned fp32 with its outputs, and the layers feeding it (fc1 Add <- MatMul)
    pinned = b["pinned"]
    ln = [n for n in pinned if "LayerNorm" in n]
    assert ln and all(pinned[n]["precision"] == "FLOAT" for n in pinned)
    assert sorted(pinned) == ["/fc1/Add", "/ln/LayerNormalization"]  # LN + the add feeding it
    assert pinned[ln[0]]["outputs"]  # set_output_type was called too
    e = load_manifest(d)["graphs"]["toy"]["engines"][0]
    assert e == m["graphs"]["toy"]["engines"][0]
    k = e["key"]
    assert (k["gpu"], k["compute_capability"], k["tensorrt"], k["precision"]) == \
        ("NVIDIA Jetson AGX Orin", "8.7", "10.3.0", "fp16")
    assert len(k["profile_sha256"]) == 64 and k["onnx_sha256"] == m["graphs"]["toy"]["sha256"]
    assert (d / e["file"]).read_bytes().startswith(b"FAKEPLAN")
    assert e["bytes"] == (d / e["file"]).stat().st_size and e["build_s"] >= 0
    cmd = e["trtexec"]
    for part in ("trtexec --onnx=", "--saveEngine=", "--minShapes=x:1x1x16", "--optShapes=x:1x5x16",
                 "--maxShapes=x:4x64x16", "--fp16", "--precisionConstraints=obey",
                 "--layerPrecisions=", "--memPoolSize=workspace:512M", "--timingCacheFile="):
        assert part in cmd
    assert "--int8" not in cmd
    assert not list(d.glob(".*.plan*"))  # no temp file left by the atomic write


def test_fp32_engine_has_no_precision_flags(trt, art):
    build_artifact(art("fp32"))
    (b,) = _builds()
    assert b["flags"] == [] and b["pinned"] == {}


def test_fp16_artifact_keeps_exported_fp32_islands(trt, art):
    build_artifact(art("fp16"))  # artifact precision fp16 → fp16 engine without --fp16
    (b,) = _builds()
    assert "FP16" in b["flags"] and "OBEY_PRECISION_CONSTRAINTS" in b["flags"]
    assert any("LayerNorm" in n for n in b["pinned"])


def test_int8_only_from_qdq(trt, art):
    d = art("int8")
    m = build_artifact(d, int8=True)
    (b,) = _builds()
    assert b["flags"] == ["INT8"] and b["int8_calibrator"] is None
    assert "--int8" in m["graphs"]["toy"]["engines"][0]["trtexec"]
    with pytest.raises(ToolkitError, match="needs the int8 QDQ export"):
        build_artifact(art("fp32"), int8=True)
    with pytest.raises(ToolkitError, match="build it with --int8"):
        build_artifact(art("int8"), fp16=True)


def test_int8_refuses_graph_without_qdq(trt, art):
    d = art("int8")
    man = json.loads((d / "manifest.json").read_text())
    import shutil

    shutil.copy(art("fp32") / "toy.onnx", d / "toy.onnx")   # a float graph posing as int8
    man["graphs"]["toy"]["sha256"] = sha256_file(d / "toy.onnx")  # a consistent manifest
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ToolkitError, match="no QuantizeLinear"):
        build_artifact(d, int8=True)
    assert not _builds()


def test_timing_cache_reused_and_engine_cache(trt, art, tmp_path):
    d = art("fp32")
    tc = tmp_path / "t.cache"
    build_artifact(d, fp16=True, timing_cache=tc)
    first = [x for w, x in trt_double.CALLS if w == "create_timing_cache"]
    assert first == [b""] and tc.read_bytes() == b"tactics;"
    # same key → cached engine, no build
    build_artifact(d, fp16=True, timing_cache=tc)
    assert len(_builds()) == 1
    # forced rebuild loads the saved timing cache
    m = build_artifact(d, fp16=True, timing_cache=tc, force=True)
    loads = [x for w, x in trt_double.CALLS if w == "create_timing_cache"]
    assert loads[-1] == b"tactics;" and tc.read_bytes() == b"tactics;tactics;"
    assert m["graphs"]["toy"]["engines"][-1]["timing_cache_reused"] is True
    assert len(m["graphs"]["toy"]["engines"]) == 1  # replaced, not duplicated
    # another precision is another cache key → a second engine entry
    m = build_artifact(d, timing_cache=tc)
    keys = [e["key"]["precision"] for e in m["graphs"]["toy"]["engines"]]
    assert keys == ["fp16", "fp32"]
    # default timing cache lives under $TOOLKIT_CACHE, named by GPU and TensorRT version
    build_artifact(art("fp16"))
    assert list((tmp_path / "cache" / "tensorrt").glob("timing-nvidia-jetson-agx-orin-sm87-trt10.3.0.cache"))


def test_profile_overrides(trt, art):
    d = art("fp32")
    build_artifact(d, profile_overrides=["seq=2:32:128"])
    assert _builds()[-1]["profiles"] == [{"x": ((1, 2, 16), (1, 32, 16), (4, 128, 16))}]
    build_artifact(d, profile_overrides=parse_profile_overrides(["x=2x1x16:2x8x16:2x16x16"]))
    assert _builds()[-1]["profiles"] == [{"x": ((2, 1, 16), (2, 8, 16), (2, 16, 16))}]
    with pytest.raises(ToolkitError, match="match no input or dynamic axis"):
        build_artifact(d, profile_overrides=["tokens=1:64:448"])
    with pytest.raises(ToolkitError, match="changes static axis 2"):
        build_artifact(d, profile_overrides=["x=1x1x8:1x1x8:1x1x8"])
    for bad in ("seq=1:64", "seq=4:2:8", "seq", "seq=a:b:c", "x=1x2:1x2x3:1x2x3"):
        with pytest.raises(ToolkitError, match="--profile"):
            parse_profile_overrides([bad])


def test_dynamic_input_without_profile_is_refused():
    g = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}], "trt_profiles": {}}
    with pytest.raises(ToolkitError, match="no TensorRT profile"):
        graph_profiles(g, {}, "g")
    assert graph_profiles(g, {"x": ((1, 16), (2, 16), (8, 16))}, "g")["x"]["max"] == [8, 16]


def test_parser_errors_name_node_and_op(trt, art):
    trt_double.UNSUPPORTED_OPS.update({"LayerNormalization", "Relu"})
    with pytest.raises(ToolkitError) as exc:
        build_artifact(art("fp32"))
    msg = str(exc.value)
    assert "2 error(s)" in msg and "LayerNormalization" in msg and "Relu" in msg
    assert "'/ln/LayerNormalization'" in msg and "UNSUPPORTED_NODE" in msg
    assert "\n" not in msg and not _builds()


def test_no_tensorrt_one_line_error_with_trtexec(monkeypatch, art):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt → ImportError
    d = art("fp32")
    with pytest.raises(MissingDependency, match="trtexec --onnx="):
        require_tensorrt(d, fp16=True)
    text = fails_cleanly("build", d, "--fp16", "--workspace", "64", contains="'tensorrt'")
    assert "trtexec --onnx=" in text and "--fp16" in text and "--minShapes=x:1x1x16" in text
    assert not list(d.glob("*.plan"))


def test_cli_build_with_double(trt, art, tmp_path):
    d = art("fp32")
    out = tmp_path / "shipped"
    r = CliRunner().invoke(app, ["build", str(d), "--fp16", "--out", str(out), "--profile",
                                 "seq=1:8:32", "--timing-cache", str(tmp_path / "tc")])
    assert r.exit_code == 0, r.output
    m = load_manifest(out)
    e = m["graphs"]["toy"]["engines"][0]
    assert (out / e["file"]).is_file() and e["profiles"]["x"]["max"] == [4, 32, 16]
    assert "engines" not in load_manifest(d)["graphs"]["toy"]  # source artifact untouched
    fails_cleanly("build", d, "--profile", "bad", contains="--profile")


class Attn(__import__("torch").nn.Module):
    def __init__(self):
        import torch

        super().__init__()
        torch.manual_seed(0)
        self.q = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 8)

    def forward(self, x, mask):
        import torch

        q = self.q(x)
        scores = torch.matmul(q, x.transpose(1, 2)) * 0.35 + mask
        return (self.out(torch.matmul(torch.softmax(scores, dim=-1), x)),)


def test_softmax_and_score_layers_pinned(trt, tmp_path):
    import torch

    from toolkit.export.spec import ExportPlan, GraphSpec, Profile

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 6, 8)).astype(np.float32),
              "mask": np.zeros((1, 6, 6), np.float32)} for _ in range(2)]
    spec = GraphSpec(name="attn", module=Attn(), input_names=["x", "mask"], output_names=["y"],
                     dynamic_axes={"x": {1: "seq"}, "mask": {1: "seq", 2: "seq"}, "y": {1: "seq"}},
                     example_inputs=lambda: (torch.randn(1, 4, 8), torch.zeros(1, 4, 4)),
                     profiles={"x": Profile([1, 1, 8], [1, 6, 8], [1, 32, 8]),
                               "mask": Profile([1, 1, 1], [1, 6, 6], [1, 32, 32])})
    plan = ExportPlan("attn", [spec], lambda: {"attn": feeds}, None, {"random_init": True}, {})
    export_plan(plan, "fp32", tmp_path / "a")
    build_artifact(tmp_path / "a", fp16=True, profile_overrides=["seq=1:16:64"])
    (b,) = _builds()
    assert b["profiles"] == [{"x": ((1, 1, 8), (1, 16, 8), (1, 64, 8)),
                              "mask": ((1, 1, 1), (1, 16, 16), (1, 64, 64))}]
    pinned = set(b["pinned"])
    ops = {n.rsplit("/", 1)[-1].split("_")[0] for n in pinned}
    assert {"Softmax", "Add", "Mul", "MatMul"} <= ops  # scores = QK^T * scale + mask
    assert not any(n.startswith("/out/") for n in pinned)  # the output projection may run fp16
    assert "/MatMul_1" not in pinned  # softmax @ V is downstream, not a feeder


def test_graph_with_external_data_builds_from_its_file(trt, tmp_path):
    """A graph whose weights live in <graph>.onnx.data (forced by a 1-byte threshold) is parsed
    from its path, so the parser finds the data beside it; the engine key covers the data."""
    from pathlib import Path

    out = tmp_path / "ext"
    m = export_plan(_plan(), "fp32", out, external_threshold=1)
    assert all(len(g["data_files"]) == 1 for g in m["graphs"].values())
    built = build_artifact(out, fp16=True)
    parsed = [Path(p) for what, p in trt_double.CALLS if what == "parse_from_file"]
    assert sorted(p.name for p in parsed) == sorted(g["file"] for g in m["graphs"].values())
    assert all(p.parent == out for p in parsed)
    load_manifest(out)  # engines, graphs and data files all check out
    name, g = next(iter(built["graphs"].items()))
    key = g["engines"][0]["key"]["key_sha256"]
    # other weights, same graph file: the engine is rebuilt, not taken from the cache
    data = out / g["data_files"][0]["file"]
    raw = bytearray(data.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x3f"
    data.write_bytes(bytes(raw))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["graphs"][name]["data_files"][0]["sha256"] = sha256_file(data)
    (out / "manifest.json").write_text(json.dumps(manifest))
    rebuilt = build_artifact(out, fp16=True)
    keys = {e["key"]["key_sha256"] for e in rebuilt["graphs"][name]["engines"]}
    assert key in keys and len(keys) == 2

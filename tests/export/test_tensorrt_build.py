"""TensorRT engine building, driven through strict doubles of the TensorRT 10 and TensorRT 11
Python APIs (generated from the binding sources, tests/support/trt_api.json)."""

import json
import shlex
import shutil
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

BOTH = pytest.mark.parametrize("trt", trt_double.LABELS, indirect=True)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy")
    return {p: (export_plan(_plan(), p, base / p), base / p) for p in ("fp32", "fp16", "int8")}


@pytest.fixture
def art(exports, tmp_path):
    """A fresh copy of an export per test (builds write engines into it)."""
    counter = iter(range(100))

    def copy(precision):
        dst = tmp_path / f"{precision}-{next(counter)}"
        shutil.copytree(exports[precision][1], dst)
        return dst

    return copy


@pytest.fixture(params=trt_double.LABELS)
def trt(request, monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    return trt_double.install(monkeypatch, request.param)


def _builds():
    return [d for what, d in trt_double.CALLS if what == "build_serialized_network"]


def _trtexec_options(line: str) -> list[str]:
    return [a.split("=", 1)[0] for a in shlex.split(line) if a.startswith("--")]


def _assert_trtexec_line(trt, line: str) -> None:
    """Every option exists in the trtexec of that release (its sampleOptions.cpp)."""
    known = set(trt_double.API["versions"][trt._label]["trtexec_options"])
    opts = _trtexec_options(line)
    assert opts and set(opts) <= known, sorted(set(opts) - known)
    if trt._major >= 11:
        assert not {"--fp16", "--int8", "--best", "--stronglyTyped"} & set(opts), line
    else:
        assert "--stronglyTyped" in opts or "--fp16" in opts or "--int8" in opts, line


# ------------------------------------------------------------------------------------------
# the doubles themselves
# ------------------------------------------------------------------------------------------

def test_double_is_strict(trt):
    """Both doubles reject misspelled names and wrong argument types, as the real bindings do."""
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    with pytest.raises(AttributeError):
        config.fp16_mode = True                     # TensorRT 7 API
    with pytest.raises(AttributeError):
        builder.build_engine                        # removed in TensorRT 10  # noqa: B018
    with pytest.raises(TypeError):
        config.set_flag("TF32")
    with pytest.raises(AttributeError):
        trt.BuilderFlag.STRICT_TYPES                # removed in TensorRT 10  # noqa: B018
    with pytest.raises(TypeError):
        config.set_memory_pool_limit(trt.BuilderFlag.TF32, 1)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        builder.create_network(flag=0)              # the parameter is named flags
    with pytest.raises(TypeError, match="No constructor"):
        trt.ICudaEngine()
    with pytest.raises(NotImplementedError, match="does not model"):
        config.builder_optimization_level           # real, but not modelled  # noqa: B018


def test_trt11_double_rejects_what_tensorrt_11_removed(monkeypatch):
    t11 = trt_double.install(monkeypatch, trt_double.TRT11)
    for gone in ("FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS",
                 "PREFER_PRECISION_CONSTRAINTS"):
        with pytest.raises(AttributeError):
            getattr(t11.BuilderFlag, gone)
    with pytest.raises(AttributeError):
        t11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH  # noqa: B018
    for name in ("IInt8Calibrator", "IInt8EntropyCalibrator2", "IStreamReader"):
        assert not hasattr(t11, name)
    logger = t11.Logger()
    builder = t11.Builder(logger)
    with pytest.raises(AttributeError):
        builder.platform_has_fast_fp16  # noqa: B018
    assert int(t11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0   # 1 in TensorRT 10
    layer_api = trt_double.api_names(trt_double.TRT11)["ILayer"]
    assert not {"precision", "set_output_type", "reset_precision"} & layer_api
    assert "device_memory_size" not in trt_double.api_names(trt_double.TRT11)["ICudaEngine"]
    assert trt_double.API["versions"]["11.1"]["classes"]["ITensor"]["properties"]["dtype"] == "r"
    # ... and the TensorRT 10 double still has them
    t10 = trt_double.module(trt_double.TRT10)
    assert t10.BuilderFlag.FP16 and int(t10.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert {"precision", "set_output_type"} <= trt_double.api_names(trt_double.TRT10)["ILayer"]


@pytest.mark.parametrize("label", trt_double.LABELS)
def test_double_exposes_exactly_the_listed_api(label):
    """Module, classes and enums of a double carry exactly the names of that release's bindings."""
    mod = trt_double.module(label)
    names = trt_double.api_names(label)
    public = {n for n in vars(mod) if not n.startswith("_")}
    assert public == names[""]
    for path, want in names.items():
        if not path:
            continue
        obj = trt_double._resolve(mod, path)
        if isinstance(obj, type) and issubclass(obj, trt_double._TrtEnum):
            assert {m.name for m in obj} | {a for a, m in obj.__members__.items()} == want, path
            continue
        own = {n for n in vars(obj) if not n.startswith("_")}
        assert own == want, (path, own ^ want)


def test_api_listing_records_its_sources():
    """The listing names the commits it was generated from, its counts are what it holds, and
    the 11.4 wheel's module binds every 11.1 name and none that 11.0 removed."""
    versions = trt_double.API["versions"]
    assert versions["10.3"]["tag"] == "v10.3.0" and versions["11.1"]["tag"] == "v11.1"
    for label, v in versions.items():
        assert len(v["commit"]) == 40
        assert v["counts"]["classes"] == len(v["classes"]) and v["counts"]["enums"] == len(v["enums"])
        assert v["counts"]["methods"] == sum(len(c["methods"]) + len(c["static"])
                                             for c in v["classes"].values())
    check = next(c for c in trt_double.API["wheel_checks"] if c["wheel"] == "11.4.0.106")
    assert check["names_missing_in_wheel"] == [] and check["dropped_but_bound_in_wheel"] == []
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS", "set_output_type", "IInt8Calibrator",
            "device_memory_size", "EXPLICIT_BATCH"} <= set(check["dropped_names"])


# ------------------------------------------------------------------------------------------
# builds: precision from the graph, strongly typed, on both versions
# ------------------------------------------------------------------------------------------

def test_fp32_artifact_fp32_engine_strongly_typed(trt, art):
    d = art("fp32")
    m = build_artifact(d, workspace_mb=512)
    (b,) = _builds()
    assert b["strongly_typed"] and b["flags"] == [] and b["pinned"] == {}
    assert b["network_flags"] == (0 if trt._major >= 11 else 1 << 1)  # 1 << STRONGLY_TYPED (=1) on 10
    assert b["pools"] == {"WORKSPACE": 512 << 20}
    assert b["profiles"] == [{"x": ((1, 1, 16), (1, 5, 16), (4, 64, 16))}]
    assert not [c for c in trt_double.CALLS if c[0] in ("warning", "deprecated")]
    e = load_manifest(d)["graphs"]["toy"]["engines"][0]
    assert e == m["graphs"]["toy"]["engines"][0] and e["typing"] == "strong"
    k = e["key"]
    assert (k["gpu"], k["compute_capability"], k["tensorrt"], k["precision"], k["typing"]) == \
        ("NVIDIA Jetson AGX Orin", "8.7", trt.__version__, "fp32", "strong")
    assert len(k["profile_sha256"]) == 64 and k["onnx_sha256"] == m["graphs"]["toy"]["sha256"]
    plan = (d / e["file"]).read_bytes()
    assert plan.startswith(b"FAKEPLAN") and json.loads(plan[8:])["runs"] == "fp32"
    assert e["bytes"] == len(plan) and e["build_s"] >= 0
    cmd = e["trtexec"]
    for part in ("trtexec --onnx=", "--saveEngine=", "--minShapes=x:1x1x16", "--optShapes=x:1x5x16",
                 "--maxShapes=x:4x64x16", "--memPoolSize=workspace:512M", "--timingCacheFile="):
        assert part in cmd
    _assert_trtexec_line(trt, cmd)
    assert not list(d.glob(".*.plan*"))  # no temp file left by the atomic write


def test_fp16_artifact_builds_fp16_engine_from_its_types(trt, art):
    d = art("fp16")
    m = build_artifact(d, fp16=True)       # --fp16 agrees with the artifact; plain build too
    (b,) = _builds()
    assert b["strongly_typed"] and b["flags"] == [] and b["pinned"] == {}
    e = m["graphs"]["toy"]["engines"][0]
    assert e["key"]["precision"] == "fp16" and e["fp32_layers"] == 0
    assert json.loads((d / e["file"]).read_bytes()[8:])["runs"] == "fp16"
    _assert_trtexec_line(trt, e["trtexec"])
    build_artifact(d, force=True)
    assert len(_builds()) == 2


def test_int8_artifact_builds_int8_engine_from_its_qdq(trt, art):
    d = art("int8")
    m = build_artifact(d, int8=True)
    (b,) = _builds()
    assert b["strongly_typed"] and b["flags"] == []
    e = m["graphs"]["toy"]["engines"][0]
    assert json.loads((d / e["file"]).read_bytes()[8:])["runs"] == "int8"
    _assert_trtexec_line(trt, e["trtexec"])
    d2 = art("int8")
    assert build_artifact(d2)["graphs"]["toy"]["engines"][0]["key"]["precision"] == "int8"
    with pytest.raises(ToolkitError, match="needs the int8 QDQ export"):
        build_artifact(art("fp32"), int8=True)
    with pytest.raises(ToolkitError, match="int8 QDQ export, which builds an int8 engine"):
        build_artifact(art("int8"), fp16=True)


def test_fp16_of_an_fp32_artifact_is_refused_naming_the_export(trt, art):
    """Choice: refuse rather than convert (the conversion needs the model and real data; the
    build machine has the artifact only). Before any TensorRT work, in one line."""
    d = art("fp32")
    with pytest.raises(ToolkitError) as exc:
        build_artifact(d, fp16=True)
    msg = str(exc.value)
    assert "toolkit export toy" in msg and "--fp16" in msg and "\n" not in msg
    assert not _builds() and "engines" not in load_manifest(d)["graphs"]["toy"]


def test_fp16_of_an_fp32_artifact_fails_cleanly_in_the_cli(art):
    text = fails_cleanly("build", art("fp32"), "--fp16", contains="fp32 export")
    assert "toolkit export toy" in text and "--fp16" in text


def test_int8_refuses_graph_without_qdq(trt, art):
    d = art("int8")
    man = json.loads((d / "manifest.json").read_text())
    shutil.copy(art("fp32") / "toy.onnx", d / "toy.onnx")   # a float graph posing as int8
    man["graphs"]["toy"]["sha256"] = sha256_file(d / "toy.onnx")  # a consistent manifest
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ToolkitError, match="no QuantizeLinear"):
        build_artifact(d, int8=True)
    assert not _builds()


# ------------------------------------------------------------------------------------------
# TensorRT 10 only: the weakly typed path behind a version check
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("trt", [trt_double.TRT10], indirect=True)
def test_weakly_typed_fp16_on_tensorrt_10(trt, art):
    d = art("fp32")
    m = build_artifact(d, fp16=True, workspace_mb=512, weakly_typed=True)
    (b,) = _builds()
    assert not b["strongly_typed"] and b["network_flags"] == 0
    assert b["flags"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    pinned = b["pinned"]
    assert sorted(pinned) == ["/fc1/Add", "/ln/LayerNormalization"]  # LN + the add feeding it
    assert all(p["precision"] == "FLOAT" and p["outputs"] for p in pinned.values())
    e = m["graphs"]["toy"]["engines"][0]
    assert e["typing"] == "weak" and e["key"]["typing"] == "weak" and e["fp32_layers"] == 2
    assert json.loads((d / e["file"]).read_bytes()[8:])["runs"] == "fp16"
    for part in ("--fp16", "--precisionConstraints=obey", "--layerPrecisions="):
        assert part in e["trtexec"]
    _assert_trtexec_line(trt, e["trtexec"])
    # the strongly typed fp32 engine of the same graph is another cache key
    m = build_artifact(d)
    assert [e["key"]["typing"] for e in m["graphs"]["toy"]["engines"]] == ["weak", "strong"]
    build_artifact(art("fp16"), weakly_typed=True)
    assert "FP16" in _builds()[-1]["flags"] and any("LayerNorm" in n for n in _builds()[-1]["pinned"])
    build_artifact(art("int8"), weakly_typed=True)
    assert _builds()[-1]["flags"] == ["INT8"]


@pytest.mark.parametrize("trt", [trt_double.TRT11], indirect=True)
def test_weakly_typed_is_refused_on_tensorrt_11(trt, art):
    with pytest.raises(ToolkitError, match="--weakly-typed needs TensorRT 10.*toolkit export toy"):
        build_artifact(art("fp32"), fp16=True, weakly_typed=True)
    assert not _builds()


@pytest.mark.parametrize("trt", [trt_double.TRT10], indirect=True)
def test_strongly_typed_network_rejects_layer_precision(trt, art):
    """The TensorRT 10 double enforces what NvInfer.h documents: a strongly typed network
    rejects setPrecision / setOutputType (the build fails)."""
    import onnx  # noqa: F401 - the parser reads the graph

    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    trt.OnnxParser(network, trt.Logger()).parse_from_file(str(art("fp32") / "toy.onnx"))
    network.get_layer(0).precision = trt.float32
    config = builder.create_builder_config()
    p = builder.create_optimization_profile()
    p.set_shape("x", (1, 1, 16), (1, 5, 16), (4, 64, 16))
    config.add_optimization_profile(p)
    assert builder.build_serialized_network(network, config) is None


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


@pytest.mark.parametrize("trt", [trt_double.TRT10], indirect=True)
def test_softmax_and_score_layers_pinned_when_weakly_typed(trt, tmp_path):
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
    build_artifact(tmp_path / "a", fp16=True, profile_overrides=["seq=1:16:64"], weakly_typed=True)
    (b,) = _builds()
    assert b["profiles"] == [{"x": ((1, 1, 8), (1, 16, 8), (1, 64, 8)),
                              "mask": ((1, 1, 1), (1, 16, 16), (1, 64, 64))}]
    pinned = set(b["pinned"])
    ops = {n.rsplit("/", 1)[-1].split("_")[0] for n in pinned}
    assert {"Softmax", "Add", "Mul", "MatMul"} <= ops  # scores = QK^T * scale + mask
    assert not any(n.startswith("/out/") for n in pinned)  # the output projection may run fp16
    assert "/MatMul_1" not in pinned  # softmax @ V is downstream, not a feeder


# ------------------------------------------------------------------------------------------
# caches, profiles, errors — both versions
# ------------------------------------------------------------------------------------------

def test_timing_cache_reused_and_engine_cache(trt, art, tmp_path):
    d = art("fp16")
    tc = tmp_path / "t.cache"
    build_artifact(d, timing_cache=tc)
    first = [x for w, x in trt_double.CALLS if w == "create_timing_cache"]
    assert first == [b""] and tc.read_bytes() == b"tactics;"
    build_artifact(d, timing_cache=tc)      # same key → cached engine, no build
    assert len(_builds()) == 1
    m = build_artifact(d, timing_cache=tc, force=True)  # forced rebuild loads the saved cache
    loads = [x for w, x in trt_double.CALLS if w == "create_timing_cache"]
    assert loads[-1] == b"tactics;" and tc.read_bytes() == b"tactics;tactics;"
    assert m["graphs"]["toy"]["engines"][-1]["timing_cache_reused"] is True
    assert len(m["graphs"]["toy"]["engines"]) == 1  # replaced, not duplicated
    m = build_artifact(d, timing_cache=tc, profile_overrides=["seq=1:8:32"])  # another key
    assert len(m["graphs"]["toy"]["engines"]) == 2
    build_artifact(art("fp32"))  # default timing cache: under $TOOLKIT_CACHE, per GPU and TensorRT
    assert list((tmp_path / "cache" / "tensorrt").glob(
        f"timing-nvidia-jetson-agx-orin-sm87-trt{trt.__version__}.cache"))


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
    d = art("fp16")
    with pytest.raises(MissingDependency, match="trtexec --onnx="):
        require_tensorrt(d)
    text = fails_cleanly("build", d, "--workspace", "64", contains="'tensorrt'")
    assert "trtexec --onnx=" in text and "--minShapes=x:1x1x16" in text
    assert "--stronglyTyped" in text and "--fp16" not in text  # works on 10; a no-op on 11
    assert not list(d.glob("*.plan"))


def test_cli_build_with_double(trt, art, tmp_path):
    for precision in ("fp32", "fp16", "int8"):
        d = art(precision)
        out = tmp_path / f"shipped-{precision}"
        r = CliRunner().invoke(app, ["build", str(d), "--out", str(out), "--profile",
                                     "seq=1:8:32", "--timing-cache", str(tmp_path / "tc")])
        assert r.exit_code == 0, r.output
        e = load_manifest(out)["graphs"]["toy"]["engines"][0]
        assert (out / e["file"]).is_file() and e["profiles"]["x"]["max"] == [4, 32, 16]
        assert e["key"]["precision"] == precision and e["key"]["tensorrt"] == trt.__version__
        _assert_trtexec_line(trt, e["trtexec"])
        assert "engines" not in load_manifest(d)["graphs"]["toy"]  # source artifact untouched
    r = CliRunner().invoke(app, ["build", str(art("fp32")), "--fp16", "--weakly-typed"])
    assert (r.exit_code == 0) == (trt._major == 10), r.output


def test_graph_with_external_data_builds_from_its_file(trt, tmp_path):
    """A graph whose weights live in <graph>.onnx.data (forced by a 1-byte threshold) is parsed
    from its path, so the parser finds the data beside it; the engine key covers the data."""
    from pathlib import Path

    out = tmp_path / "ext"
    m = export_plan(_plan(), "fp32", out, external_threshold=1)
    assert all(len(g["data_files"]) == 1 for g in m["graphs"].values())
    built = build_artifact(out)
    parsed = [Path(p) for what, p in trt_double.CALLS if what == "parse_from_file"]
    assert sorted(p.name for p in parsed) == sorted(g["file"] for g in m["graphs"].values())
    assert all(p.parent == out for p in parsed)
    load_manifest(out)  # engines, graphs and data files all check out
    name, g = next(iter(built["graphs"].items()))
    key = g["engines"][0]["key"]["key_sha256"]
    data = out / g["data_files"][0]["file"]   # other weights, same graph file: rebuilt
    raw = bytearray(data.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x3f"
    data.write_bytes(bytes(raw))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["graphs"][name]["data_files"][0]["sha256"] = sha256_file(data)
    (out / "manifest.json").write_text(json.dumps(manifest))
    rebuilt = build_artifact(out)
    keys = {e["key"]["key_sha256"] for e in rebuilt["graphs"][name]["engines"]}
    assert key in keys and len(keys) == 2


def test_tensorrt_10_16_of_jetpack_7_2_builds_too(monkeypatch, art, tmp_path):
    """The 10.16 listing (JetPack 7.2) makes a third double: same strongly typed builds."""
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    trt = trt_double.install(monkeypatch, "10.16")
    names = trt_double.api_names("10.16")
    assert {n for n in vars(trt) if not n.startswith("_")} == names[""]
    assert "IStreamReaderV2" in names[""] and "FP16" in names["BuilderFlag"]
    for precision in ("fp32", "fp16", "int8"):
        e = build_artifact(art(precision))["graphs"]["toy"]["engines"][0]
        assert e["key"]["tensorrt"] == "10.16.0" and e["typing"] == "strong"
        _assert_trtexec_line(trt, e["trtexec"])
    assert all(b["network_flags"] == 2 and b["flags"] == [] for b in _builds())

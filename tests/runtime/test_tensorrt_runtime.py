"""TensorRTSession through the TensorRT 10 and 11 doubles + a fake CUDA device; ORT GPU helpers
on the CPU."""

import shutil
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from support import trt_double
from support.zoo import Toy
from support.zoo import toy_plan as _plan
from toolkit.core.errors import ToolkitError
from toolkit.export.manifest import load_manifest
from toolkit.export.onnx import export_plan
from toolkit.export.tensorrt import build_artifact, network_flags
from toolkit.runtime.backends import open_onnx_session
from toolkit.runtime.gpu import ort_provider_options
from toolkit.runtime.session import OrtSession
from toolkit.runtime.tensorrt import DeviceTensor, TensorRTSession
from toolkit.runtime.torch_session import TorchSession


@pytest.fixture(scope="module")
def toy_fp32(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy") / "fp32"
    export_plan(_plan(), "fp32", d)
    return d


@pytest.fixture(params=trt_double.LABELS)
def built(toy_fp32, tmp_path, monkeypatch, request):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    trt_double.install(monkeypatch, request.param)
    d = tmp_path / "art"
    shutil.copytree(toy_fp32, d)
    build_artifact(d)
    return d


def _open(d, precision="fp32", **kw):
    m = load_manifest(d)
    g = m["graphs"]["toy"]
    return open_onnx_session(d / g["file"], "trt", precision, manifest_graph=g, **kw)


def test_session_matches_torch_and_reuses_buffers(built):
    sess = _open(built)
    reads = [d for what, d in trt_double.CALLS if what == "deserialize"]
    if sys.modules["tensorrt"]._major >= 11:  # streamed through IStreamReaderV2 on 11 (10.7+)
        assert reads[-1]["stream_reader_v2_reads"] >= 2
    else:                                     # 10.3 has no IStreamReaderV2: the file's bytes
        assert reads[-1] == {"bytes": (built / load_manifest(built)["graphs"]["toy"]["engines"][0]["file"]).stat().st_size}
    assert isinstance(sess, TensorRTSession) and sess.input_names == ["x"] and sess.output_names == ["y"]
    dev = trt_double.DEVICE
    x = np.random.default_rng(0).standard_normal((2, 7, 16)).astype(np.float32)
    ref = TorchSession(Toy(), ["x"], ["y"]).run({"x": x})["y"]
    y = sess.run({"x": x})["y"]
    assert y.shape == (2, 7, 8) and np.allclose(y, ref, atol=1e-5)
    first = dev.mallocs
    assert first == 2  # one input buffer, one output buffer (slot 0)
    sess.run({"x": x})
    assert dev.mallocs == 3  # second output slot (double buffering), then steady state
    for _ in range(3):
        sess.run({"x": x})
    sess.run({"x": x[:, :3]})  # smaller: reuses the buffers
    assert dev.mallocs == 3 and dev.frees == 0
    big = np.random.default_rng(1).standard_normal((4, 40, 16)).astype(np.float32)
    y = sess.run({"x": big})["y"]
    assert np.allclose(y, TorchSession(Toy(), ["x"], ["y"]).run({"x": big})["y"], atol=1e-5)
    assert dev.mallocs == 5 and dev.frees == 2  # input grew, one output slot grew
    # the input buffer grew with head-room but never past the profile max (4x64x16 fp32)
    assert sess._in_bufs["x"].capacity <= 4 * 64 * 16 * 4
    with pytest.raises(ToolkitError, match="outside the engine's profile"):
        sess.run({"x": np.zeros((1, 65, 16), np.float32)})
    with pytest.raises(ToolkitError, match="engine takes"):
        sess.run({"x": np.zeros((1, 5, 15), np.float32)})
    with pytest.raises(ToolkitError, match="missing inputs"):
        sess.run({})
    sess.close()
    assert dev.frees == dev.mallocs  # everything released


def test_engine_for_other_gpu_or_trt_version_is_refused(built, monkeypatch):
    trt = sys.modules["tensorrt"]
    monkeypatch.setattr("toolkit.core.hardware.gpu_identity",
                        lambda device=0: {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(ToolkitError) as exc:
        _open(built)
    msg = str(exc.value)
    assert "NVIDIA Jetson AGX Orin" in msg and "9.0" in msg and f"toolkit build {built}" in msg
    monkeypatch.setattr("toolkit.core.hardware.gpu_identity",
                        lambda device=0: {"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"})
    built_with = trt.__version__
    other = trt_double.TRT11 if trt._major == 10 else trt_double.TRT10
    trt_double.install(monkeypatch, other)   # the other major on the same Orin
    with pytest.raises(ToolkitError, match=rf"TensorRT {built_with}, but .* TensorRT "
                                           rf"{trt_double.VERSION[other]}; .*rebuild"):
        _open(built)


def test_missing_engine_says_how_to_build(built):
    with pytest.raises(ToolkitError, match=rf"no fp16 TensorRT engine.*toolkit build {built} --fp16"):
        _open(built, "fp16")


def _kv_graph(path):
    """step(x[1,1,4], past[1,P,4]) -> y = 2x, present = concat(past, x) — a KV-cache shape."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"], name="/Mul"),
         helper.make_node("Concat", ["past", "x"], ["present"], axis=1, name="/Concat")],
        "kv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4]),
               helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, "past_len", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4]),
         helper.make_tensor_value_info("present", TensorProto.FLOAT, [1, "total_len", 4])],
        initializer=[two])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _kv_session(tmp_path, monkeypatch, version=trt_double.TRT10, **kw):
    trt = trt_double.install(monkeypatch, version)
    _kv_graph(tmp_path / "kv.onnx")
    network = trt.Builder(trt.Logger()).create_network(network_flags(trt))
    trt.OnnxParser(network, trt.Logger()).parse_from_file(str(tmp_path / "kv.onnx"))
    builder = trt.Builder(trt.Logger())
    config = builder.create_builder_config()
    p = builder.create_optimization_profile()
    p.set_shape("past", (1, 0, 4), (1, 8, 4), (1, 16, 4))
    config.add_optimization_profile(p)
    (tmp_path / "kv.plan").write_bytes(bytes(builder.build_serialized_network(network, config)))
    return TensorRTSession(tmp_path / "kv.plan", **kw)


@pytest.mark.parametrize("version", trt_double.LABELS)
def test_run_device_keeps_kv_cache_on_device(tmp_path, monkeypatch, version):
    sess = _kv_session(tmp_path, monkeypatch, version)
    dev = trt_double.DEVICE
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 1, 4)).astype(np.float32) for _ in range(12)]
    past = np.zeros((1, 0, 4), np.float32)
    for x in xs:
        out = sess.run_device({"x": x, "past": past})
        assert isinstance(out["present"], DeviceTensor)
        # the new cache is never written into the buffer the old one is read from
        if isinstance(past, DeviceTensor):
            assert out["present"].ptr != past.ptr
        past = out["present"]
    assert past.shape == (1, 12, 4)
    assert np.array_equal(past.numpy(), np.concatenate(xs, axis=1))
    assert np.allclose(out["y"].numpy(), 2 * xs[-1])
    # device-resident inputs are not copied: only x ever needed an input buffer
    # (past had a host buffer only for the empty first step; it never grew)
    assert sess._in_bufs["past"].capacity == 256
    # output buffers grow geometrically (x1.5) as the cache grows, not once per step
    assert dev.mallocs <= 10, dev.mallocs
    sess.close()


@pytest.mark.parametrize("version", trt_double.LABELS)
def test_cuda_graph_replays_fixed_shape_steps(tmp_path, monkeypatch, version):
    sess = _kv_session(tmp_path, monkeypatch, version, cuda_graph=True)
    dev = trt_double.DEVICE
    past = np.ones((1, 3, 4), np.float32)
    results = []
    for i in range(5):
        x = np.full((1, 1, 4), float(i), np.float32)
        results.append(sess.run({"x": x, "past": past}))
        assert np.array_equal(results[-1]["present"][0, -1], x[0, 0])
        assert np.allclose(results[-1]["y"], 2 * x)
    assert dev.graphs_captured == 1 and dev.graph_launches == 3  # run 2 captures, 3..5 replay
    # every call is timed with events recorded outside the capture (the fake refuses that)
    stats = sess.device_stats()
    assert stats["device_runs"] == 5 and stats["device_ms"] > 0
    sess.run({"x": np.zeros((1, 1, 4), np.float32), "past": np.ones((1, 5, 4), np.float32)})
    assert dev.graphs_captured == 1  # a new shape first runs normally


@pytest.mark.parametrize("major", [10, 11])
def test_ort_trt_provider_options_from_manifest(toy_fp32, tmp_path, major):
    g = load_manifest(toy_fp32)["graphs"]["toy"]
    for precision in ("fp32", "fp16", "int8"):
        opts = ort_provider_options("ort-trt", g, precision, tmp_path / "c", trt_major=major)
        t = opts["TensorrtExecutionProvider"]
        assert t["trt_profile_min_shapes"] == "x:1x1x16"
        assert t["trt_profile_opt_shapes"] == "x:1x5x16"
        assert t["trt_profile_max_shapes"] == "x:4x64x16"
        # strongly typed on both: the graph's types decide; TensorRT 11 ignores these anyway
        assert "trt_fp16_enable" not in t and "trt_int8_enable" not in t
        assert t["trt_engine_cache_enable"] == "True" and t["trt_engine_cache_path"] == str(tmp_path / "c")
        assert t["trt_timing_cache_enable"] == "True"
        assert "CUDAExecutionProvider" in opts
    if major == 10:   # the weakly typed builder flags, TensorRT 10 only
        t = ort_provider_options("ort-trt", g, "fp16", tmp_path, trt_major=10,
                                 weakly_typed=True)["TensorrtExecutionProvider"]
        assert t["trt_fp16_enable"] == "True" and t["trt_int8_enable"] == "False"
    else:
        with pytest.raises(ToolkitError, match="need TensorRT 10"):
            ort_provider_options("ort-trt", g, "fp16", tmp_path, trt_major=11, weakly_typed=True)
    assert list(ort_provider_options("ort-cuda", g, "fp32")) == ["CUDAExecutionProvider"]
    with pytest.raises(ToolkitError):
        ort_provider_options("ort", g, "fp32")


def test_gpu_backends_refuse_cleanly_without_gpu_build(toy_fp32):
    g = load_manifest(toy_fp32)["graphs"]["toy"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(ToolkitError, match="onnxruntime-gpu|GPU build"):
        open_onnx_session(toy_fp32 / g["file"], "ort-cuda", manifest_graph=g)


def test_session_run_is_checked_and_run_device_defaults_to_host(toy_fp32):
    """Every backend: ``run`` refuses a missing input in one line; ``run_device`` on a backend
    without device memory gives the host arrays of ``run`` and ``to_host`` passes them on."""
    g = load_manifest(toy_fp32)["graphs"]["toy"]
    sess = OrtSession(toy_fp32 / g["file"])
    with pytest.raises(ToolkitError, match="missing inputs \\['x'\\]"):
        sess.run({})
    x = np.random.default_rng(0).standard_normal((2, 9, 16)).astype(np.float32)
    dev = sess.run_device({"x": x})
    assert isinstance(dev["y"], np.ndarray)
    np.testing.assert_array_equal(sess.to_host(dev["y"]), sess.run({"x": x})["y"])

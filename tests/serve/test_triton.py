"""`toolkit export-triton`: a Triton model repository from a Whisper artifact (the trained
tiny.en). Triton cannot run here: every config.pbtxt is parsed with Triton's own protobuf
definitions and checked against the ONNX graphs, and the BLS model's code runs against the
toolkit's onnxruntime sessions through a strict double of ``triton_python_backend_utils``."""

import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from tritonclient.grpc import model_config_pb2

from support import triton_double
from support.cli import fails_cleanly, run_toolkit
from support.zoo import toy_plan
from toolkit import registry
from toolkit.core.errors import ToolkitError
from toolkit.export.onnx import export_plan
from toolkit.models.whisper.audio import load_audio
from toolkit.serve import triton

open_pipeline = registry.get("whisper").open_pipeline

NAME = "whisper-tiny.en-fp32"
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 9: "TYPE_BOOL"}


@pytest.fixture(scope="session")
def artifact(tiny_en_artifact):
    return tiny_en_artifact


@pytest.fixture(scope="session")
def repo(artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton-repo") / "models"
    written = triton.write_repository([artifact], out)
    assert written == [out / NAME, out / f"{NAME}-encoder", out / f"{NAME}-decoder"]
    return out


def _type(name: str) -> str:
    return model_config_pb2.DataType.Name(name)


def _onnx_io(path):
    m = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}

    def io(values):
        return [(v.name, ONNX_TYPES[v.type.tensor_type.elem_type],
                 [d.dim_value if d.HasField("dim_value") else -1
                  for d in v.type.tensor_type.shape.dim]) for v in values if v.name not in init]
    return io(m.graph.input), io(m.graph.output)


def test_configs_parse_with_tritons_protobufs_and_match_the_graphs(repo, artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    configs = {p.parent.name: triton_double.parse_config(p) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == {NAME, f"{NAME}-encoder", f"{NAME}-decoder"}
    assert triton.is_repository(repo)

    for graph in ("encoder", "decoder"):
        cfg = configs[f"{NAME}-{graph}"]
        assert cfg.name == f"{NAME}-{graph}" and cfg.platform == "onnxruntime_onnx"
        model = repo / cfg.name / "1" / "model.onnx"
        assert os.path.samefile(model, artifact / manifest["graphs"][graph]["file"])  # linked
        inputs, outputs = _onnx_io(model)
        batch = cfg.max_batch_size
        for tensors, want in ((cfg.input, inputs), (cfg.output, outputs)):
            got = [(t.name, _type(t.data_type), list(t.dims)) for t in tensors]
            assert got == [(n, ty, dims[1:] if batch else dims) for n, ty, dims in want]
        if graph == "encoder":   # batchable: windows of concurrent requests join
            assert batch == manifest["model_config"]["batch_limits"]["windows"] == 8
            assert cfg.HasField("dynamic_batching")
            assert [d for _, _, d in inputs] == [[-1, 80, 3000]]
        else:                    # past K/V lengths differ between requests
            assert batch == 0 and not cfg.HasField("dynamic_batching")
            assert "cannot concatenate" in (repo / cfg.name / "config.pbtxt").read_text()
            assert dict((n, d) for n, _, d in inputs)["past_key_0"] == [-1, 6, -1, 64]
        (group,) = cfg.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1

    bls = configs[NAME]
    assert bls.backend == "python" and bls.max_batch_size > 0 and bls.HasField("dynamic_batching")
    ins = {t.name: t for t in bls.input}
    assert list(ins) == ["AUDIO", "LANGUAGE", "TASK", "RESPONSE"]
    assert _type(ins["AUDIO"].data_type) == "TYPE_FP32" and list(ins["AUDIO"].dims) == [-1]
    assert ins["AUDIO"].allow_ragged_batch and not ins["AUDIO"].optional
    assert all(ins[n].optional and _type(ins[n].data_type) == "TYPE_STRING"
               for n in ("LANGUAGE", "TASK", "RESPONSE"))
    assert [(t.name, _type(t.data_type)) for t in bls.output] == [("TEXT", "TYPE_STRING"),
                                                                  ("SEGMENTS", "TYPE_STRING")]
    assert {k: v.string_value for k, v in bls.parameters.items()} == {
        "encoder_model": f"{NAME}-encoder", "decoder_model": f"{NAME}-decoder",
        "max_windows": "8", "decoder_rows": "0"}
    version = repo / NAME / "1"
    assert (version / "model.py").read_bytes() == triton.TEMPLATE.read_bytes()
    shipped = sorted(str(p.relative_to(version / "artifact"))
                     for p in (version / "artifact").rglob("*") if p.is_file())
    assert shipped == sorted(["manifest.json", *manifest["extra_files"]])   # no graphs
    for f, sha in manifest["extra_files"].items():
        assert hashlib.sha256((version / "artifact" / f).read_bytes()).hexdigest() == sha


def test_bls_model_transcribes_like_toolkit_transcribe(repo, artifact, shared_data):
    jfk = shared_data / "audio" / "jfk.flac"
    pipe = open_pipeline(artifact=artifact)
    try:
        want = pipe.transcribe(jfk)["text"]   # what `toolkit transcribe` prints
    finally:
        pipe.close()
    assert "ask not what your country can do for you" in want

    server = triton_double.Server(repo)
    audio = load_audio(jfk)[None, :]
    try:
        with server.installed():
            model = server.load_python_model(NAME)
            strings = lambda s: np.array([[s.encode()]], dtype=np.object_)  # noqa: E731
            requests = [
                triton_double.request({"AUDIO": audio}),
                triton_double.request({"AUDIO": np.zeros((1, 0), np.float32)}),
                triton_double.request({"AUDIO": audio, "LANGUAGE": strings("fr")}),
                triton_double.request({"SAMPLES": audio}),
                triton_double.request({"AUDIO": audio, "RESPONSE": strings("srt")}),
            ]
            good, empty, french, unknown, srt = server.execute(NAME, model, requests)
            model.finalize()
    finally:
        server.close()

    assert not good.has_error(), good.error()
    text = triton_double.get_output_tensor_by_name(good, "TEXT").as_numpy()
    assert text.shape == (1, 1) and text[0, 0].decode() == want
    segments = json.loads(triton_double.get_output_tensor_by_name(good, "SEGMENTS")
                          .as_numpy()[0, 0])
    assert "".join(s["text"] for s in segments).strip() == want
    assert 0 <= segments[0]["start"] < segments[-1]["end"] <= 11.5

    for bad, words in ((empty, "AUDIO is empty"), (french, "English-only"),
                       (unknown, "unexpected inference input 'SAMPLES'")):
        assert bad.has_error() and words in bad.error().message(), bad.error()
        assert "\n" not in bad.error().message()
    assert not srt.has_error(), srt.error()
    subtitles = triton_double.get_output_tensor_by_name(srt, "TEXT").as_numpy()[0, 0].decode()
    assert subtitles.startswith("1\n00:00:00,000 --> ") and "ask not" in subtitles

    # the decode loop really ran through Triton's models: encoder batches within its limit
    models = {m for m, _ in triton_double.CALLS}
    assert models == {f"{NAME}-encoder", f"{NAME}-decoder"}
    enc = [s["input_features"] for m, s in triton_double.CALLS if m.endswith("-encoder")]
    assert enc and all(1 <= s[0] <= 8 and s[1:] == (80, 3000) for s in enc)
    # the two good jfk requests of this execute() were decoded together: one encoder call of
    # 2 windows, decoder calls of 2 windows × 5 beams
    assert (2, 80, 3000) in enc
    rows = {s["input_ids"][0] for m, s in triton_double.CALLS if m.endswith("-decoder")}
    assert 10 in rows


def test_bls_requests_to_unknown_models_fail_in_one_line(repo):
    server = triton_double.Server(repo)
    try:
        with server.installed() as pb_utils:
            model = server.load_python_model(NAME)
            model.pipe.decoder.model_name = "no-such-model"   # a repository missing a model
            (resp,) = server.execute(NAME, model, [triton_double.request(
                {"AUDIO": np.full((1, 16000), 0.1, np.float32)})])
            assert resp.has_error()
            assert "no-such-model" in resp.error().message()
            assert "not found" in resp.error().message()
            assert not hasattr(pb_utils, "Server")   # the module holds the real names only
    finally:
        server.close()


def _with_fake_engines(artifact, dst):
    """A copy of the artifact (hard links) whose manifest records TensorRT engines, as
    `toolkit build` writes them (the plans are placeholders: Triton never loads them here)."""
    dst.mkdir()
    for f in artifact.rglob("*"):
        if f.is_file():
            (dst / f.relative_to(artifact)).parent.mkdir(parents=True, exist_ok=True)
            os.link(f, dst / f.relative_to(artifact))
    (dst / "manifest.json").unlink()
    manifest = json.loads((artifact / "manifest.json").read_text())
    for name, g in manifest["graphs"].items():
        data = f"plan of {name}".encode()
        fname = f"{name}.fp16.sm89-trt10.3.0-abcdef12.plan"
        (dst / fname).write_bytes(data)
        key = {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.3.0",
               "precision": "fp16", "key_sha256": "ab" * 32}
        g["engines"] = [{"file": fname, "key": key, "sha256": hashlib.sha256(data).hexdigest(),
                         "bytes": len(data), "profiles": g["trt_profiles"]}]
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


def test_tensorrt_platform_writes_the_engines_as_plans(artifact, tmp_path):
    art = _with_fake_engines(artifact, tmp_path / "built")
    out = tmp_path / "repo"
    triton.write_repository([art], out, platform="tensorrt", instances=2)
    for graph in ("encoder", "decoder"):
        cfg = triton_double.parse_config(out / f"built-{graph}" / "config.pbtxt")
        assert cfg.platform == "tensorrt_plan" and cfg.instance_group[0].count == 2
        assert (out / f"built-{graph}" / "1" / "model.plan").read_bytes() == \
            f"plan of {graph}".encode()
        assert not (out / f"built-{graph}" / "1" / "model.onnx").exists()
        assert "NVIDIA L4" in (out / f"built-{graph}" / "config.pbtxt").read_text()
    assert triton_double.parse_config(out / "built-encoder" / "config.pbtxt").max_batch_size == 8
    bls = triton_double.parse_config(out / "built" / "config.pbtxt")
    assert bls.parameters["decoder_rows"].string_value == "8"    # the engine's profile
    with pytest.raises(ToolkitError, match="GPU only"):
        triton.write_repository([art], tmp_path / "cpu", platform="tensorrt", kind="cpu")
    (art / "encoder.fp16.sm89-trt10.3.0-abcdef12.plan").write_bytes(b"changed")
    with pytest.raises(ToolkitError, match="does not match the sha256"):
        triton.write_repository([art], tmp_path / "again", platform="tensorrt")


def test_out_is_replaced_only_when_ours_and_forced(artifact, tmp_path):
    out = tmp_path / "repo"
    triton.write_repository([artifact], out, kind="cpu", instances=3)
    cfg = triton_double.parse_config(out / f"{NAME}-decoder" / "config.pbtxt")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    with pytest.raises(ToolkitError, match="pass --force"):
        triton.write_repository([artifact], out)
    triton.write_repository([artifact], out, force=True)
    assert triton.is_repository(out)

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(ToolkitError, match="never replaced"):
        triton.write_repository([artifact], theirs, force=True)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    (out / "extra.txt").write_text("added by hand")   # no longer only what we wrote
    with pytest.raises(ToolkitError, match="did not write"):
        triton.write_repository([artifact], out, force=True)
    twin = tmp_path / "b" / NAME
    twin.parent.mkdir()
    shutil.copytree(artifact, twin, copy_function=os.link)
    with pytest.raises(ToolkitError, match="would both write"):
        triton.write_repository([artifact, twin], tmp_path / "two")
    assert not (tmp_path / "two").exists()


def test_cli_writes_a_repository(artifact, tmp_path):
    out = tmp_path / "repo"
    r = run_toolkit("export-triton", artifact, "--out", out, "--instances", "2")
    assert r.returncode == 0, r.stderr
    assert f"{NAME}-encoder" in r.stdout and "python BLS" in r.stdout
    assert triton_double.parse_config(out / NAME / "config.pbtxt").instance_group[0].count == 2


def test_cli_one_line_errors(artifact, tmp_path):
    toy = tmp_path / "toy"
    export_plan(toy_plan(), "fp32", toy)
    fails_cleanly("export-triton", toy, "--out", tmp_path / "r1",
                  contains="export-triton writes Whisper models only")
    fails_cleanly("export-triton", tmp_path / "missing", "--out", tmp_path / "r2",
                  contains="does not exist; create one with `toolkit export")
    fails_cleanly("export-triton", artifact, "--out", tmp_path / "r3", "--platform", "tensorrt",
                  contains="run `toolkit build")
    fails_cleanly("export-triton", artifact, "--out", tmp_path / "r4", "--platform", "tflite",
                  contains="unknown --platform 'tflite'")
    fails_cleanly("export-triton", artifact, "--out", tmp_path / "r5", "--instances", "0",
                  contains="--instances must be at least 1")
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 6))

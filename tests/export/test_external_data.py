"""Graphs over the external-data threshold, on the trained tiny.en: the exporter is told a 1 MiB
threshold, so the path that large-v3 takes (weights in ``<graph>.onnx.data``) runs in seconds.
The large sizes themselves are measured by `toolkit bench` (README, "Large models")."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from tests.support.cli import SCRIPT, fails_cleanly, run_toolkit
from toolkit.core.files import sha256_file
from toolkit.export import external
from toolkit.export.manifest import load_manifest

pytestmark = pytest.mark.slow
JFK = "ask not what your country can do for you"


def _export(tmp: Path, name: str, *flags: str) -> Path:
    out = tmp / name
    r = run_toolkit("export", "whisper", "--external-data-mb", "1", "--out", out, *flags)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("external")
    return {"fp32": _export(tmp, "fp32"), "fp16": _export(tmp, "fp16", "--fp16"),
            "int8-cpu": _export(tmp, "int8cpu", "--int8", "--int8-target", "cpu")}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-cpu"])
def test_weights_live_in_one_listed_hashed_file_per_graph(artifacts, precision, shared_data):
    art = artifacts[precision]
    m = load_manifest(art, family="whisper")
    assert m["precision"] == precision and m["external_data_threshold_bytes"] == 1 << 20
    for name, g in m["graphs"].items():
        graph = art / g["file"]
        (data,) = g["data_files"]
        assert data["file"] == f"{name}.onnx.data"
        assert data["sha256"] == sha256_file(art / data["file"])
        assert data["bytes"] == (art / data["file"]).stat().st_size
        # the graph file holds the structure; the weights are in the data file
        assert graph.stat().st_size < 1 << 20 < data["bytes"]
        assert external.locations(graph) == {data["file"]}
    # every step reported its time and peak memory
    assert {s["step"] for s in m["export_steps"]} >= {"loading whisper",
                                                      "tracing encoder to ONNX",
                                                      "validating against PyTorch on real inputs"}
    assert all(s["peak_rss_gb"] > 0 for s in m["export_steps"])
    txt = art.parent / f"txt-{precision}"
    r = run_toolkit("transcribe", shared_data / "audio" / "jfk.flac", "--artifact", art,
                    "--output-format", "txt", "--output-dir", txt)
    assert r.returncode == 0, r.stderr
    assert JFK in (txt / "jfk.txt").read_text().lower()


def test_external_graph_matches_the_inline_one(artifacts, tmp_path):
    """The same graph, its weights moved out and back in, computes the same numbers."""
    art = artifacts["fp32"]
    graph = art / "encoder.onnx"
    inline = tmp_path / "encoder.onnx"
    external.save(onnx.load(str(graph)), inline, threshold=1 << 40)
    assert not external.data_files(inline) and external.locations(inline) == set()
    from toolkit.export.ort import run_onnx

    feed = {"input_features": np.random.default_rng(0).standard_normal((1, 80, 3000),
                                                                       dtype=np.float32)}
    a, b = run_onnx(graph, [feed])[0], run_onnx(inline, [feed])[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def copy(artifacts, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(artifacts["fp32"], dst)
    return dst


def _transcribe_fails(art: Path, shared: Path, contains: str) -> str:
    return fails_cleanly("transcribe", shared / "audio" / "jfk.flac", "--artifact", art,
                         contains=contains)


def test_missing_data_file_is_named(copy, shared_data):
    (copy / "decoder.onnx.data").unlink()
    _transcribe_fails(copy, shared_data, "missing data file 'decoder.onnx.data' of graph decoder")


def test_truncated_data_file_is_named(copy, shared_data):
    f = copy / "encoder.onnx.data"
    with open(f, "r+b") as h:
        h.truncate(f.stat().st_size // 2)
    _transcribe_fails(copy, shared_data, "data file encoder.onnx.data of")


def test_swapped_data_file_is_named(copy, shared_data):
    f = copy / "encoder.onnx.data"
    data = bytearray(f.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = os.urandom(64)  # same size, other weights
    f.write_bytes(bytes(data))
    _transcribe_fails(copy, shared_data, "data file encoder.onnx.data does not match the sha256")


def test_graph_reading_weights_outside_the_artifact_is_refused(copy, shared_data, tmp_path):
    """A graph (and a manifest made to match it) pointing a tensor at a file outside the
    artifact: refused before any runtime opens it."""
    outside = tmp_path / "outside.data"
    shutil.copyfile(copy / "encoder.onnx.data", outside)
    graph = copy / "encoder.onnx"
    m = onnx.load(str(graph), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for e in t.external_data:
        if e.key == "location":
            e.value = "../outside.data"
    onnx.save(m, str(graph))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["graphs"]["encoder"]["sha256"] = sha256_file(graph)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _transcribe_fails(copy, shared_data, "reads weights from '../outside.data'")


def test_manifest_naming_a_data_file_outside_is_refused(copy, shared_data):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["graphs"]["encoder"]["data_files"][0]["file"] = "../encoder.onnx.data"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _transcribe_fails(copy, shared_data, "not a plain file name inside the artifact")


def test_model_too_large_for_memory_is_refused_before_loading(tmp_path):
    """large-v3 at a 2 GB cap: one line with the estimate, before any weight is made."""
    out = tmp_path / "l3"
    err = fails_cleanly("export", "whisper", "--preset", "large-v3", "--out", out,
                        env={"TOOLKIT_MAX_MEMORY_GB": "2"},
                        contains="exporting whisper large-v3 at fp32 (1.54 B parameters) needs "
                                 "about")
    assert "TOOLKIT_MAX_MEMORY_GB=2" in err
    assert not out.exists()
    wav = tmp_path / "x.wav"  # a real file: a missing one is refused first, in its own words
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    fails_cleanly("transcribe", wav, "--preset", "large-v3", env={"TOOLKIT_MAX_MEMORY_GB": "2"},
                  contains="loading Whisper large-v3")


def test_disk_too_small_leaves_nothing(tmp_path):
    """A file-size limit of 20 MB (what a full disk looks like to the writer): one line, and
    neither the artifact nor a partial directory is left behind."""
    out = tmp_path / "art"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, 20 << 20))

    r = subprocess.run([str(SCRIPT), "export", "whisper", "--external-data-mb", "1", "--out",
                        str(out)], capture_output=True, text=True, preexec_fn=limit, timeout=600)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "file-size limit" in errors[0] and "nothing was written" in \
        errors[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_per_tensor_files_become_one_data_file(artifacts, tmp_path):
    """What PyTorch's exporter writes above 2 GiB — one file per tensor, named by location only
    (no offset, no length) — is streamed into <graph>.onnx.data; the per-tensor files go, and
    the graph computes what it did."""
    from toolkit.export.ort import run_onnx

    src = artifacts["fp32"] / "encoder.onnx"
    graph = tmp_path / "encoder.onnx"
    m = onnx.load(str(src))
    onnx.save_model(m, str(graph), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=1024)
    m = onnx.load(str(graph), load_external_data=False)
    for t in m.graph.initializer:  # as PyTorch writes them: a location and nothing else
        keep = [(e.key, e.value) for e in t.external_data if e.key == "location"]
        del t.external_data[:]
        for k, v in keep:
            e = t.external_data.add()
            e.key, e.value = k, v
    onnx.save(m, str(graph))
    per_tensor = {p.name for p in tmp_path.iterdir()} - {"encoder.onnx"}
    assert len(per_tensor) > 20
    external.consolidate(graph, threshold=1 << 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    assert external.locations(graph) == {"encoder.onnx.data"}
    feed = {"input_features": np.random.default_rng(1).standard_normal((1, 80, 3000),
                                                                       dtype=np.float32)}
    a, b = run_onnx(src, [feed])[0], run_onnx(graph, [feed])[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value,says", [("0", "must be at least 1 and at most 1900"),
                                        ("4096", "must be at least 1 and at most 1900"),
                                        ("inf", "must be a finite number")])
def test_external_data_threshold_out_of_range(value, says, tmp_path):
    fails_cleanly("export", "whisper", "--external-data-mb", value, "--out", tmp_path / "x",
                  contains=f"--external-data-mb {says}")


def _graph_with_weight(path: Path, n: int) -> None:
    w = onnx.numpy_helper.from_array(np.arange(n, dtype=np.float32).reshape(1, n), "w")
    node = onnx.helper.make_node("Add", ["x", "w"], ["y"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, n])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, n])], [w])
    onnx.save(onnx.helper.make_model(graph), str(path))


def test_consolidate_leaves_an_inline_graph_under_the_threshold_as_written(tmp_path):
    # the rewrite used to parse and re-save it (the peak of InternVL2-1B's export); now the file
    # is not touched, and one over the threshold still goes to its data file
    small = tmp_path / "small.onnx"
    _graph_with_weight(small, 4096)
    before = (small.read_bytes(), small.stat().st_mtime_ns)
    external.consolidate(small, threshold=1 << 20)
    assert (small.read_bytes(), small.stat().st_mtime_ns) == before
    assert external.data_files(small) == []
    big = tmp_path / "big.onnx"
    _graph_with_weight(big, 4096)
    external.consolidate(big, threshold=8192)
    assert [p.name for p in external.data_files(big)] == ["big.onnx.data"]
    assert external.locations(big) == {"big.onnx.data"}

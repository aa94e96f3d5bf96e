"""toolkit embed / train svt / bench --model svt through Typer's CliRunner."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from support.cli import fails_cleanly
from toolkit.bench.records import COMMON_FIELDS as REQUIRED
from toolkit.cli import app
from toolkit.models.svt.video import write_synthetic_clip

runner = CliRunner()


def _run(args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("TOOLKIT_THREADS", "1")


def test_embed_torch_and_ort_artifact_agree(shared_data, tmp_path):
    demo = shared_data / "video" / "demo.mp4"
    r = _run(["embed", demo, "--preset", "tiny", "--size", "64", "--frames", "4", "--json"])
    assert r.exit_code == 0, r.output
    torch_emb = np.array(json.loads(r.stdout.strip().splitlines()[-1])["embedding"])
    assert torch_emb.shape == (64,)
    art = tmp_path / "art"
    r = _run(["export", "svt", "--preset", "tiny", "--out", art])
    assert r.exit_code == 0, r.output
    r = _run(["embed", demo, "--artifact", art, "--backend", "ort", "--size", "64",
              "--frames", "4", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["random_init"] is True and rec["views"] == [[4, 64, 64]]
    np.testing.assert_allclose(np.array(rec["embedding"]), torch_emb, atol=1e-4)
    r = _run(["embed", demo, "--artifact", art, "--backend", "ort", "--size", "64",
              "--frames", "4", "--slow-fast", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["views"] == [[2, 64, 64], [8, 32, 32]]
    assert abs(np.linalg.norm(rec["embedding"]) - 1) < 1e-3


@pytest.mark.parametrize("make,args,msg", [
    (lambda p: p.write_text("text"), [], "not a readable video"),
    (lambda p: write_synthetic_clip(p, n_frames=5, size=32), ["--frames", "8"], "only 5 frames"),
    (lambda p: write_synthetic_clip(p, n_frames=12, size=32), ["--size", "40"], "multiple of"),
])
def test_embed_errors_are_one_line(tmp_path, make, args, msg):
    p = tmp_path / "v.mp4"
    make(p)
    fails_cleanly("embed", p, "--preset", "tiny", *args, contains=msg)


def test_train_cli(tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    for i in range(2):
        write_synthetic_clip(data / f"c{i}.mp4", n_frames=16, size=48, seed=i)
    r = _run(["train", "svt", "--data", data, "--preset", "tiny", "--steps", "3", "--out",
              tmp_path / "run", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert "teacher entropy" in r.output and (tmp_path / "run" / "backbone" / "model.pt").is_file()
    r = _run(["train", "svt", "--data", tmp_path / "empty", "--preset", "tiny"])
    assert r.exit_code == 2 and "does not exist" in r.output


@pytest.mark.slow
def test_bench_cli_writes_records(shared_data, tmp_path):
    out = tmp_path / "svt.json"
    r = _run(["bench", "--model", "svt", "--preset", "tiny", "--frames", "2", "--size", "32",
              "--runs", "1", "--warmup", "0", "--limit", "4", "--backend", "torch,ort",
              "--precision", "fp32,int8", "--out", out, "--workdir", tmp_path / "w"])
    assert r.exit_code == 0, r.output
    records = json.loads(out.read_text())
    assert {(x["backend"], x["precision"]) for x in records} == {("torch", "fp32"), ("ort", "fp32"),
                                                                  ("ort", "int8")}
    for x in records:
        assert set(REQUIRED) <= set(x)
        assert x["random_init"] is True and x["frames"] == 2 and x["size_px"] == 32
        assert x["peak_rss_mb"] > 0 and x["gmac_per_clip"] > 0 and 0 < x["share_of_peak"]
    ort32 = next(x for x in records if x["backend"] == "ort" and x["precision"] == "fp32")
    assert ort32["quality_value"] > 0.99999 and ort32["nn_retrieval_agreement"] == 1.0
    assert out.with_suffix(".csv").is_file()
    assert "random" in r.output.lower()

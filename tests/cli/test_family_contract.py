"""Every registered family honours the Family contract, through the same shared paths: load
its smallest preset, build its export plan, export and validate fp32, open its pipeline on the
artifact and on the model (same graphs, same numbers), and run the one bench harness (one record
schema, one table shape, a PNG). A family added to the registry without its tests fails here."""

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit import registry
from toolkit.bench.harness import BenchSpec
from toolkit.bench.records import COMMON_FIELDS, EXPORT_FIELDS
from toolkit.core.parity import rel_l2
from toolkit.export.onnx import export_plan
from toolkit.export.spec import ExportPlan
from toolkit.models.base import LoadedModel
from toolkit.runtime.graphs import open_artifact, open_model

from support.zoo import tiny

FAMILIES = sorted(registry.FAMILIES)
TESTS = Path(__file__).resolve().parents[1]
# the smallest bench each family can run (a new family adds its line here)
TINY_BENCH = {
    "whisper": {"tokens": 2, "limit": 1},
    "gradtts": {"steps": ["1"], "limit": 1},
    "svt": {"frames": ["2"], "size": ["32"], "limit": 3},
}
TABLE_HEAD = ["backend", "precision", "shape", "p50 ms", "p90", "p99"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("TOOLKIT_THREADS", "1")


@pytest.mark.parametrize("name", FAMILIES)
def test_family_has_every_layer_and_its_tests(name):
    fam = registry.get(name)
    for layer in ("models", "export", "runtime", "bench"):
        fam.layer(layer)
    assert callable(fam.layer("models").load_model)
    assert callable(fam.layer("export").build_plan)
    assert isinstance(fam.layer("export").EXPORT_REVISION, int)
    assert callable(fam.layer("runtime").open_pipeline)
    assert isinstance(fam.bench_spec, BenchSpec) and fam.bench_spec.family == name
    assert not set(fam.bench_spec.fields) & set(COMMON_FIELDS)
    assert list(TESTS.glob(f"models/test_{name}_*.py")), f"no tests/models/test_{name}_*.py"
    assert list(TESTS.glob(f"cli/test_{name}_cli.py")), f"no tests/cli/test_{name}_cli.py"
    assert name in TINY_BENCH, f"add a tiny bench configuration for {name} to TINY_BENCH"


@pytest.mark.parametrize("name", FAMILIES)
def test_load_plan_export_and_open_both_ways(name, tmp_path):
    fam = registry.get(name)
    loaded = tiny(name)
    assert isinstance(loaded, LoadedModel) and loaded.family == name
    assert loaded.random_init and loaded.source["preset"] == fam.test_preset
    plan = fam.build_plan(loaded)
    assert isinstance(plan, ExportPlan) and plan.family == name
    names = [g.name for g in plan.graphs]
    assert len(set(names)) == len(names)

    manifest = export_plan(plan, "fp32", tmp_path / "fp32")
    assert set(manifest["graphs"]) == set(names)
    from_artifact = open_artifact(tmp_path / "fp32", name, "ort")
    from_model = open_model(loaded, fam.build_plan, "torch")
    assert set(from_artifact.sessions) == set(from_model.sessions) == set(names)
    feeds = plan.validation_feeds()
    for g in names:  # the same graph on both paths gives the same numbers
        feed = feeds[g][0]
        a, b = from_artifact.sessions[g].run(feed), from_model.sessions[g].run(feed)
        assert set(a) == set(b)
        for k in a:
            assert rel_l2(a[k], b[k]) < 1e-3, (g, k)
    from_artifact.close()
    from_model.close()

    pipe = fam.open_pipeline(artifact=tmp_path / "fp32", backend="ort")
    assert pipe.random_init and len(pipe.sessions) == len(names)
    pipe.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_one_harness_one_schema_one_table(name, tmp_path, capsys):
    fam = registry.get(name)
    out = tmp_path / "bench.json"
    options = dict(TINY_BENCH[name])
    records = fam.bench(preset=fam.test_preset, backends=["torch", "ort"], precisions=["fp32"],
                        runs=1, warmup=0, out=out, workdir=tmp_path / "work", isolate=False,
                        **options)
    assert {(r["backend"], r["precision"]) for r in records} >= {("torch", "fp32"),
                                                                 ("ort", "fp32")}
    saved = json.loads(out.read_text())
    assert len(saved) == len(records)
    for r in saved:
        assert set(COMMON_FIELDS) <= set(r)
        assert set(r) - set(COMMON_FIELDS) <= set(fam.bench_spec.fields) | set(EXPORT_FIELDS) | {
            k for k in r if k.startswith("speedup_vs_")}
        if r["backend"] == "ort":  # the row says what its artifact's export cost
            assert r["export_seconds"] > 0 and r["export_peak_rss_gb"] > 0
        assert r["family"] == name and r["random_init"] is True
        assert r["latency_ms_p50"] > 0 and np.isfinite(r["quality_value"])
    torch_row = next(r for r in saved if r["backend"] == "torch")
    assert torch_row["speedup_vs_torch_fp32"] == pytest.approx(1.0)
    assert out.with_suffix(".csv").is_file()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert f"{name}-{fam.test_preset} bench (random init)" in text
    header = next(line for line in text.splitlines()
                  if line.startswith("┃") and "backend" in line)
    cells = [c.strip() for c in header.strip("┃│ ").replace("┃", "|").replace("│", "|").split("|")]
    assert cells[:len(TABLE_HEAD)] == TABLE_HEAD

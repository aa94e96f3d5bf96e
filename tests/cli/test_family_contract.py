"""Every registered family honours the Family contract, through the same shared paths: load
its smallest preset, build its export plan, export and validate fp32, open its pipeline on the
artifact and on the model (same graphs, same numbers), and run the one bench harness (one record
schema, one table shape, a PNG). A family added to the registry without its tests fails here."""

import json
from pathlib import Path

import numpy as np
import pytest

from support.zoo import tiny
from toolkit import registry
from toolkit.bench.harness import BenchSpec
from toolkit.bench.records import COMMON_FIELDS, EXPORT_FIELDS
from toolkit.core.parity import rel_l2
from toolkit.export.onnx import export_plan
from toolkit.export.spec import ExportPlan
from toolkit.models.base import LoadedModel
from toolkit.runtime.from_model import open_model
from toolkit.runtime.graphs import open_artifact

FAMILIES = sorted(registry.FAMILIES)
TESTS = Path(__file__).resolve().parents[1]
# the smallest bench each family can run (a new family adds its line here)
TINY_BENCH = {
    "whisper": {"tokens": 2, "limit": 1},
    "gradtts": {"steps": ["1"], "limit": 1},
    "svt": {"frames": ["2"], "size": ["32"], "limit": 3},
    "marian": {"limit": 2},
    "internvl": {"limit": 2},
}
TABLE_HEAD = ["backend", "precision", "shape", "p50 ms", "p90", "p99"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("TOOLKIT_THREADS", "1")


def _refs(fam) -> list[str]:
    """Every "module:attribute" reference of a registry entry."""
    refs = [fam.load, fam.plan, fam.pipeline, fam.bench]
    refs += [f"{fam.cli}:{c.replace('-', '_')}" for c, _ in fam.commands]
    refs += [fam.parameter_count] if fam.parameter_count else []
    refs += [f"{fam.serve}:SERVED"] if fam.serve else []
    return refs


@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_declared_once_and_has_its_tests(name):
    fam = registry.get(name)
    for ref in _refs(fam):           # everything the entry names exists
        assert callable(registry.resolve(ref)) or ref == fam.bench, ref
    assert isinstance(fam.export_revision, int)
    assert isinstance(fam.bench_spec, BenchSpec) and fam.bench_spec.family == name
    assert not set(fam.bench_spec.fields) & set(COMMON_FIELDS)
    for cmd, summary in fam.commands:  # the help line the registry shows is the command's
        doc = " ".join((registry.resolve(f"{fam.cli}:{cmd.replace('-', '_')}").__doc__
                        or "").split())
        assert doc.startswith(summary.rstrip(".")), (cmd, summary, doc)
    if fam.train:
        train = fam.train_module
        assert callable(train.train)
        assert hasattr(train, "TrainOptions") or hasattr(fam.cli_module, "train_command")
    if fam.serve:
        served = registry.resolve(f"{fam.serve}:SERVED")
        assert served.family == name and served.routes
    for layer in ("models", "export", "runtime", "cli"):
        assert list(TESTS.glob(f"{layer}/test_{name}_*.py")), f"no tests/{layer}/test_{name}_*.py"
    assert name in TINY_BENCH, f"add a tiny bench configuration for {name} to TINY_BENCH"


def test_no_family_is_listed_outside_the_registry():
    """The package names a family only in the registry and in that family's own modules."""
    root = Path(registry.__file__).parent
    own = {f"{layer}/{n}" for n in FAMILIES for layer in ("models", "export", "runtime", "bench",
                                                          "train", "cli", "serve/routes")}
    listing = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel == "registry.py" or any(rel.startswith(o) for o in own):
            continue
        text = path.read_text()
        if sum(f'"{n}"' in text for n in FAMILIES) > 1:   # names two families: a list of them
            listing.append(rel)
    assert listing == []


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
    records = fam.run_bench(preset=fam.test_preset, backends=["torch", "ort"], precisions=["fp32"],
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
    assert f"{name}-{fam.test_preset} (random init) bench" in text
    header = next(line for line in text.splitlines()
                  if line.startswith("┃") and "backend" in line)
    cells = [c.strip() for c in header.strip("┃│ ").replace("┃", "|").replace("│", "|").split("|")]
    assert cells[:len(TABLE_HEAD)] == TABLE_HEAD

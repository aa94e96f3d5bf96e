"""``toolkit bench --model internvl`` on a small checkpoint: one record per case with the
caption figures, ort fp32 captions equal to PyTorch fp32's, the hf (transformers generate())
row, pycocoevalcap's figures against the references, the targets' lines."""

import json
import math
import shutil

import pytest

from support.internvl import noisy_tiny, save_original
from toolkit import registry

internvl = registry.get("internvl")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")
def test_bench_rows_figures_and_targets(tmp_path, shared_data, capsys, monkeypatch):
    monkeypatch.setenv("TOOLKIT_THREADS", "1")
    ckpt = save_original(noisy_tiny(), tmp_path / "ckpt")
    out = tmp_path / "bench.json"
    records = internvl.run_bench(checkpoint=str(ckpt), backends=["torch", "ort", "hf"],
                                 precisions=["fp32"], runs=1, warmup=0, limit=3, out=out,
                                 workdir=tmp_path / "work", isolate=False)
    rows = {(r["backend"], r["precision"]): r for r in records}
    assert set(rows) == {("torch", "fp32"), ("ort", "fp32"), ("hf", "fp32")}
    torch_row, ort, hf = rows[("torch", "fp32")], rows[("ort", "fp32")], rows[("hf", "fp32")]
    for r in records:
        assert r["error"] is None and r["images"] == 3 and r["beam_size"] == 1
        assert r["random_init"] is False and r["quality_metric"] == "cider"
        for key in ("vision_ms", "prefill_ms", "ms_per_token", "images_per_s", "peak_rss_mb"):
            assert r[key] > 0, key
        for key in ("cider", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l"):
            assert math.isfinite(r[key]) and r[key] >= 0, key
        assert len(r["captions"]) == 3 and all(c.strip() for c in r["captions"])
    # the same weights, greedy, fp32: the same captions on every path
    assert ort["captions"] == torch_row["captions"] == hf["captions"]
    assert ort["exact_match_vs_torch_fp32"] == 1.0 and hf["exact_match_vs_torch_fp32"] == 1.0
    assert ort["cider"] == pytest.approx(torch_row["cider"])
    assert ort["speedup_vs_hf_fp32"] == pytest.approx(hf["latency_ms_p50"]
                                                      / ort["latency_ms_p50"])
    saved = json.loads(out.read_text())
    assert len(saved) == 3 and out.with_suffix(".png").is_file()
    text = capsys.readouterr().out
    assert "internvl-ckpt bench" in text and "CIDEr" in text
    assert "ort fp32 captions equal torch fp32: 100.0% pass" in text
    assert "ort fp32 vs hf generate() end to end" in text


def test_beam_size_is_checked():
    spec = internvl.bench_spec
    assert spec.check_options({}) == {"beam_size": 1}
    with pytest.raises(Exception, match="--beam-size must be from 1 to 8"):
        spec.check_options({"beam_size": 9})


def test_data_without_annotations_is_one_line(tmp_path):
    from toolkit.core.errors import ToolkitError

    with pytest.raises(ToolkitError, match="no annotations/ folder"):
        internvl.bench_spec.workloads(internvl, None, tmp_path, 2, {"beam_size": 1})

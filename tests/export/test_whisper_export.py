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


def test_the_tied_token_embedding_is_stored_once(tiny_fp32):
    """The decoder's token lookup and output projection are one matrix: the fp32 graph holds
    one [vocab, d] / [d, vocab] initializer, not two (80 MB of tiny.en's decoder)."""
    import onnx

    m = load_manifest(tiny_fp32, family="whisper")
    assert m["graphs"]["decoder"]["tied_embedding"] == "/embed_tokens/Gather"
    dec = onnx.load(str(tiny_fp32 / m["graphs"]["decoder"]["file"]))
    vocab_sized = [t.name for t in dec.graph.initializer if 51865 in t.dims]
    assert len(vocab_sized) == 1, vocab_sized


def _tied_graph(vocab=96, width=64):
    """ids → Gather(E) → MatMul(·, Eᵀ): a decoder's tied embedding in miniature."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((vocab, width)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="/embed_tokens/Gather"),
             helper.make_node("MatMul", ["h", "Et"], ["logits"], name="/proj_out/MatMul")]
    graph = helper.make_graph(
        nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "t", vocab]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", "t", width])],
        initializer=[numpy_helper.from_array(table, "E"),
                     numpy_helper.from_array(np.ascontiguousarray(table.T), "Et")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table


def _run(model_or_path, ids):
    import onnxruntime as ort

    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})


def test_fp32_tie_gathers_columns_of_the_projection(tmp_path):
    import onnx

    from toolkit.export.precision import tie_transposed_embedding

    model, _ = _tied_graph()
    path = tmp_path / "d.onnx"
    onnx.save(model, str(path))
    ids = np.array([[3, 7, 95], [0, 0, 1]])
    before = _run(str(path), ids)
    assert tie_transposed_embedding(path) == "/embed_tokens/Gather"
    tied = onnx.load(str(path))
    assert [t.name for t in tied.graph.initializer] == ["Et"]
    after = _run(str(path), ids)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))   # the same numbers
    assert tie_transposed_embedding(path) is None                     # nothing left to tie


def test_int8_lookup_reads_the_projections_8bit_blocks():
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from toolkit.export.precision import share_tied_embedding

    model, table = _tied_graph()
    q = MatMulNBitsQuantizer(model, bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    ids = np.array([[3, 7, 95], [0, 0, 1]])
    logits_q, h_fp32 = _run(q.model.model, ids)
    assert share_tied_embedding(q.model.model) == "/embed_tokens/Gather"
    assert "E" not in {t.name for t in q.model.model.graph.initializer}
    logits, h = _run(q.model.model, ids)
    np.testing.assert_array_equal(h_fp32, table[ids])       # before: the fp32 rows
    step = np.abs(table[ids]).max(axis=-1, keepdims=True) / 127
    assert np.abs(h - table[ids]).max() <= step.max()      # after: within one int8 step
    assert not np.array_equal(h, h_fp32)
    assert np.abs(logits - logits_q).max() < 0.1 * np.abs(logits_q).max()

"""The Marian export: the encoder and the cached decoder step of the trained Bergamot student
(SSRU state as the cache) and of an OPUS-MT-shaped Hugging Face model (self-attention K/V),
validated against PyTorch; the artifact carries its vocabulary and shortlist."""

import json

import numpy as np
import pytest

from support.zoo import export
from toolkit import registry
from toolkit.models.marian.loading import load_model
from toolkit.runtime.generate.pipeline import kv_cache

marian = registry.get("marian")


def test_the_artifact_holds_both_graphs_the_cache_and_the_vocabulary(marian_artifact):
    manifest = json.loads((marian_artifact / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"encoder", "decoder", "decoder_shortlist"}
    cfg = manifest["model_config"]
    assert cfg["architecture"] == "bergamot" and cfg["pair"] == ["en", "pt"]
    assert (marian_artifact / cfg["vocab"]["files"]).is_file()
    assert (marian_artifact / cfg["shortlist"]).is_file()
    dec = manifest["graphs"]["decoder"]
    names = [i["name"] for i in dec["inputs"]]
    assert names[:4] == ["input_ids", "past_position", "past_cell_0", "past_cell_1"]
    assert "source_bias" in names and "cross_key_0" in names
    assert all(g["held_precision"] == "fp32" for g in manifest["graphs"].values())
    short = [i["name"] for i in manifest["graphs"]["decoder_shortlist"]["inputs"]]
    assert short == names + ["vocab_ids"]
    # the tied 32000 × 256 table is stored once per decoder (lookup and projection share it)
    assert (marian_artifact / "decoder.onnx").stat().st_size < 45e6


def test_an_opus_mt_shaped_decoder_exports_with_a_growing_kv_cache(tmp_path):
    """A small MarianMTModel: the same cached-decoder contract as Whisper's, validated."""
    from transformers import MarianConfig, MarianMTModel

    from toolkit.models.marian.hf import HFMarian
    from toolkit.models.marian.loading import LoadedMarian

    base = load_model(preset="opus-mt-base")
    cfg = MarianConfig(vocab_size=32001, d_model=64, encoder_layers=2, decoder_layers=2,
                       encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=128, decoder_ffn_dim=128, pad_token_id=32000,
                       decoder_start_token_id=32000, eos_token_id=0,
                       max_position_embeddings=512, scale_embedding=True)
    import torch

    torch.manual_seed(0)
    small = LoadedMarian(family="marian", model=HFMarian(MarianMTModel(cfg)),
                         source={"preset": "small-hf", "random_init": True, "pair": "en-pt"},
                         vocab=base.vocab, pair=("en", "pt"), kind="hf")
    manifest = export(small, "fp32", tmp_path / "hf")
    dec = manifest["graphs"]["decoder"]
    want = [c.past for c in kv_cache(2, 4, 16)]
    assert [i["name"] for i in dec["inputs"]][1:5] == want
    pipe = marian.open_pipeline(artifact=tmp_path / "hf")
    ref = marian.open_pipeline(loaded=small, backend="torch")
    texts = ["The file could not be opened.", "Show hidden files"]
    got, want = pipe.translate(texts), ref.translate(texts)
    assert [t.tokens for t in got.translations] == [t.tokens for t in want.translations]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8-cpu"])
def test_reduced_precisions_keep_the_translations(precision, tmp_path, en_pt_pairs):
    import sacrebleu

    export(load_model(), precision, tmp_path / precision)
    rows = en_pt_pairs[:48]
    src, refs = [s for s, _ in rows], [[r for _, r in rows]]
    fp32 = marian.open_pipeline(backend="torch").translate(src)
    low = marian.open_pipeline(artifact=tmp_path / precision).translate(src)
    a, b = ([t.text for t in r.translations] for r in (fp32, low))
    drift = sacrebleu.corpus_bleu(a, refs).score - sacrebleu.corpus_bleu(b, refs).score
    same = np.mean([x == y for x, y in zip(a, b)])
    print(f"{precision}: BLEU drift {drift:+.2f}, identical {same:.2f}")
    assert abs(drift) < (1.0 if precision == "fp16" else 3.0)
    assert same > (0.9 if precision == "fp16" else 0.6)

"""The InternVL export: the vision graph and the LLM's cached decoder step over
``inputs_embeds`` (RoPE from the cache length, grouped KV heads), equal to the PyTorch model's
own pieces, validated on real caption images at fp32, fp16 and int8; the artifact carries the
tokenizer and the embedding table. (The family is not registered yet: plans are called
directly.)"""

import json

import numpy as np
import pytest
import torch

from toolkit.export.internvl.graphs import decoder_inputs, decoder_outputs
from toolkit.export.internvl.plan import MAX_TILES, build_plan, caption_images, real_feeds
from toolkit.export.onnx import export_plan, torch_outputs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_graphs_equal_the_models_own_pieces(internvl_tiny, shared_data):
    """Vision = ``encode_image``; the decoder's prefill and a cached step = transformers' own
    Qwen2 over a DynamicCache (``decoder_step``), to float rounding."""
    loaded = internvl_tiny
    vision, decoder = build_plan(loaded).graphs
    image = caption_images("val")[0]
    values, tiling = loaded.preprocess(image)
    with torch.inference_mode():
        want = loaded.encode_image(values).numpy()
        embeds, _ = loaded.prefill_embeds(values, tiling.count)
        ref, cache = loaded.decoder_step(embeds)
        nxt = loaded.embed_tokens(ref.argmax(-1, keepdim=True))
        ref2, _ = loaded.decoder_step(nxt, cache)
    got = torch_outputs(vision, {"pixel_values": values.numpy()})["image_embeds"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    cfg = build_plan(loaded).model_config
    empty = {n: np.zeros((1, cfg["kv_heads"], 0, cfg["head_dim"]), np.float32)
             for n in decoder_inputs(cfg["layers"])[1:]}
    out = torch_outputs(decoder, {"inputs_embeds": embeds.numpy(), **empty})
    np.testing.assert_allclose(out["logits"], ref.numpy(), atol=1e-4)
    assert out["present_key_0"].shape == (1, cfg["kv_heads"], embeds.shape[1], cfg["head_dim"])
    past = {k.replace("present_", "past_"): v for k, v in out.items() if k != "logits"}
    out2 = torch_outputs(decoder, {"inputs_embeds": nxt.numpy(), **past})
    np.testing.assert_allclose(out2["logits"], ref2.numpy(), atol=1e-4)


def test_the_fp32_artifact_holds_both_graphs_the_tokenizer_and_the_table(internvl_artifact,
                                                                        internvl_tiny):
    manifest = json.loads((internvl_artifact / "manifest.json").read_text())
    assert manifest["family"] == "internvl" and set(manifest["graphs"]) == {"vision", "decoder"}
    cfg = manifest["model_config"]
    assert (cfg["tokens_per_tile"], cfg["heads"], cfg["kv_heads"], cfg["layers"]) == (64, 4, 2, 4)
    dec = manifest["graphs"]["decoder"]
    assert [i["name"] for i in dec["inputs"]] == decoder_inputs(4)
    assert [o["name"] for o in dec["outputs"]] == decoder_outputs(4)
    table = np.load(internvl_artifact / cfg["embed_table"], allow_pickle=False)
    weight = internvl_tiny.model.language_model.get_input_embeddings().weight.detach().numpy()
    assert np.array_equal(table, weight)
    assert (internvl_artifact / cfg["tokenizer"]).is_file()
    # validated on real images: a 1-tile and a 3-tile vision feed, prefill + cached decoder steps
    report = manifest["parity"]["graphs"]
    assert set(report) == {"vision", "decoder"}
    assert all(m["passed"] and m["rel_l2"] < 1e-4 for g in report.values() for m in g.values())
    assert set(manifest["extra_files"]) == {"embed_tokens.npy", "tokenizer.json"}
    # TensorRT profiles: 1–13 tiles; decoder rows up to 8, prompts + new tokens on the time axis
    prof = manifest["graphs"]["vision"]["trt_profiles"]["pixel_values"]
    assert prof["min"][0] == 1 and prof["max"][0] == MAX_TILES == 13
    emb = manifest["graphs"]["decoder"]["trt_profiles"]["inputs_embeds"]
    assert emb["min"] == [1, 1, 256] and emb["max"][1] >= 13 * 64 + 30


def test_validation_feeds_cover_tiles_prefill_steps_and_beams(internvl_tiny, shared_data):
    feeds = real_feeds(internvl_tiny, caption_images("val")[:1], steps=2)
    assert sorted(f["pixel_values"].shape[0] for f in feeds["vision"]) == [1, 3]
    lengths = [(f["inputs_embeds"].shape[:2], f["past_key_0"].shape[2]) for f in feeds["decoder"]]
    prompt = lengths[0][0][1]
    assert lengths[0] == ((1, prompt), 0)                       # the prefill
    assert lengths[1:3] == [((1, 1), prompt), ((1, 1), prompt + 1)]   # cached steps
    assert lengths[3] == ((2, 1), prompt + 2)                   # two beams


@pytest.mark.parametrize("precision", ["fp16", "int8-cpu",
                                       pytest.param("int8", marks=pytest.mark.slow)])
def test_reduced_precisions_validate(precision, internvl_tiny, shared_data, tmp_path):
    manifest = export_plan(build_plan(internvl_tiny), precision, tmp_path / precision)
    assert manifest["precision"] == precision
    held = {g["held_precision"] for g in manifest["graphs"].values()}
    assert held <= {"fp16", "int8", "fp32"} and held != {"fp32"}


def test_the_table_is_written_after_the_weights_are_released(shared_data, tmp_path):
    """The exporter frees the PyTorch weights (``release``) before it writes the extra files:
    the embedding table is taken before that (it was read off the meta tensors and failed)."""
    from toolkit.models.internvl.loading import load_model

    loaded = load_model(preset="internvl-tiny")
    want = loaded.model.language_model.get_input_embeddings().weight.detach().numpy().copy()
    manifest = export_plan(build_plan(loaded), "fp32", tmp_path / "a", release=loaded.release)
    table = np.load(tmp_path / "a" / manifest["model_config"]["embed_table"], allow_pickle=False)
    assert np.array_equal(table, want)

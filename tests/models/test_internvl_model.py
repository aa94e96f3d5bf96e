"""InternVL in PyTorch: pixel shuffle against transformers' own, InternLM2's fused ``wqkv``
mapped into Llama against a straightforward implementation of the fused layout, both checkpoint
layouts written here (safetensors) and loaded back, the refusals, the presets' sizes, and
generation (deterministic; the decoder-step loop agrees with transformers' ``generate``)."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from toolkit.core.errors import ToolkitError
from toolkit.models.internvl import internlm2
from toolkit.models.internvl.loading import (
    PRESETS,
    build,
    load_model,
    parameter_count,
)
from toolkit.models.internvl.model import pixel_shuffle
from toolkit.models.internvl.tokenizer import TINY_TOKENIZER, tiny_tokenizer

VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              image_size=448, patch_size=56)          # an 8×8 grid → 16 tokens per tile
QWEN2 = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64,
             intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
             max_position_embeddings=2048, tie_word_embeddings=False)
INTERNLM2 = dict(architectures=["InternLM2ForCausalLM"], model_type="internlm2", hidden_size=64,
                 intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=1000000.0,
                 max_position_embeddings=2048, bias=False,
                 rope_scaling={"type": "dynamic", "factor": 2.0})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _pixels(tiles=1, seed=1):
    return torch.randn(tiles, 3, 448, 448, generator=torch.Generator().manual_seed(seed))


# --- pixel shuffle -----------------------------------------------------------------------------

def test_pixel_shuffle_matches_transformers():
    from transformers.models.internvl.modeling_internvl import InternVLModel

    x = torch.arange(2 * 8 * 8 * 6, dtype=torch.float32).reshape(2, 8, 8, 6)
    ours = pixel_shuffle(x, 0.5)
    assert ours.shape == (2, 4, 4, 24)
    torch.testing.assert_close(ours, InternVLModel.pixel_shuffle(None, x, 0.5))
    # each output vector gathers a 2×2 block of neighbours
    assert set(ours[0, 0, 0].reshape(4, 6)[:, 0].tolist()) == {0.0, 6.0, 48.0, 54.0}


def test_image_tokens_per_tile():
    for name in ("internvl2-1b", "internvl2-2b"):
        p = PRESETS[name]
        with torch.device("meta"):
            model, kind = build(p.vision, p.llm, p.downsample_ratio)
        assert model.num_image_token == 256                  # InternVL2's 448 px tile
        assert kind == ("qwen2" if name == "internvl2-1b" else "internlm2")
        assert model.mlp1[1].in_features == 4096 and model.mlp1[3].out_features == \
            model.llm_config.hidden_size
    tiny = PRESETS["internvl-tiny"].vision
    assert (tiny["image_size"] // tiny["patch_size"]) ** 2 // 4 == 64


# --- InternLM2's fused wqkv ---------------------------------------------------------------------

def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x, pos, theta):
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = pos[:, None].float() * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + rot * sin


def internlm2_reference(state, cfg, ids):
    """InternLM2ForCausalLM written out from its fused layout: per layer, wqkv's output viewed
    as [kv_heads, groups + 2, head_dim] — query heads first, then the key, then the value."""
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"]
    hd, groups, eps = d // h, h // kv, cfg["rms_norm_eps"]
    x = state["model.tok_embeddings.weight"][ids]
    t = ids.shape[1]
    pos = torch.arange(t)
    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = _rms(x, state[p + "attention_norm.weight"], eps)
        qkv = (y @ state[p + "attention.wqkv.weight"].T).view(1, t, kv, groups + 2, hd)
        q = qkv[:, :, :, :groups].reshape(1, t, h, hd).transpose(1, 2)
        k = qkv[:, :, :, -2].transpose(1, 2)
        v = qkv[:, :, :, -1].transpose(1, 2)
        q, k = _rope(q, pos, cfg["rope_theta"]), _rope(k, pos, cfg["rope_theta"])
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
        x = x + att.transpose(1, 2).reshape(1, t, d) @ state[p + "attention.wo.weight"].T
        y = _rms(x, state[p + "ffn_norm.weight"], eps)
        gate = torch.nn.functional.silu(y @ state[p + "feed_forward.w1.weight"].T)
        x = x + (gate * (y @ state[p + "feed_forward.w3.weight"].T)) @ \
            state[p + "feed_forward.w2.weight"].T
    return _rms(x, state["model.norm.weight"], eps) @ state["output.weight"].T


def _internlm2_state(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    d, v, f = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // h
    s = {"model.tok_embeddings.weight": torch.randn(v, d, generator=g),
         "model.norm.weight": 1 + 0.1 * torch.randn(d, generator=g),
         "output.weight": torch.randn(v, d, generator=g) * 0.1}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "attention.wqkv.weight"] = torch.randn((h + 2 * kv) * hd, d, generator=g) * 0.2
        s[p + "attention.wo.weight"] = torch.randn(d, d, generator=g) * 0.1
        s[p + "feed_forward.w1.weight"] = torch.randn(f, d, generator=g) * 0.1
        s[p + "feed_forward.w3.weight"] = torch.randn(f, d, generator=g) * 0.1
        s[p + "feed_forward.w2.weight"] = torch.randn(d, f, generator=g) * 0.1
        s[p + "attention_norm.weight"] = 1 + 0.1 * torch.randn(d, generator=g)
        s[p + "ffn_norm.weight"] = 1 + 0.1 * torch.randn(d, generator=g)
    return s


@pytest.mark.parametrize("heads,kv", [(4, 2), (4, 1), (4, 4)])
def test_fused_wqkv_maps_into_llama_exactly(heads, kv):
    from transformers import LlamaForCausalLM

    cfg = dict(INTERNLM2, vocab_size=50, num_attention_heads=heads, num_key_value_heads=kv)
    state = _internlm2_state(cfg)
    llama = LlamaForCausalLM(internlm2.llama_config(cfg)).eval()
    missing, unexpected = llama.load_state_dict(internlm2.to_llama(state, heads, kv),
                                                strict=False)
    assert not unexpected and not missing
    ids = torch.randint(0, 50, (1, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = llama(ids).logits
    torch.testing.assert_close(ours, internlm2_reference(state, cfg, ids), rtol=1e-4, atol=1e-4)
    back = internlm2.from_llama(internlm2.to_llama(state, heads, kv), heads, kv)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


# --- checkpoints in both layouts ----------------------------------------------------------------

def _original_dir(tmp_path, llm: dict, seed=0):
    """A small checkpoint in InternVL2's own file layout (config.json, model.safetensors,
    tokenizer.json), and the model whose weights it holds."""
    tok = tiny_tokenizer()
    llm = dict(llm, vocab_size=len(tok))
    model, kind = build(VISION, llm, 0.5, -1, tok.token_id("<IMG_CONTEXT>"))
    _random_(model, seed).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if kind == "internlm2":
        lm = {k[len("language_model."):]: v for k, v in state.items()
              if k.startswith("language_model.")}
        state = {k: v for k, v in state.items() if not k.startswith("language_model.")}
        heads, kv = llm["num_attention_heads"], llm["num_key_value_heads"]
        state.update({"language_model." + k: v
                      for k, v in internlm2.from_llama(lm, heads, kv).items()})
    out = tmp_path / "ckpt"
    out.mkdir()
    save_file(state, str(out / "model.safetensors"))
    shutil.copy(TINY_TOKENIZER, out / "tokenizer.json")
    cfg = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
           "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
           "downsample_ratio": 0.5, "force_image_size": 448, "select_layer": -1,
           "ps_version": "v2", "dynamic_image_size": True, "max_dynamic_patch": 6,
           "use_thumbnail": True,
           "template": "internlm2-chat" if kind == "internlm2" else "Hermes-2",
           "vision_config": dict(VISION, architectures=["InternVisionModel"],
                                 model_type="intern_vit_6b", qkv_bias=True,
                                 norm_type="layer_norm", layer_norm_eps=1e-6),
           # as InternVL2's llm_config has them: kernels and dtypes the loader must not obey
           "llm_config": dict(llm, attn_implementation="flash_attention_2",
                              torch_dtype="bfloat16", _name_or_path="../pretrained/llm")}
    (out / "config.json").write_text(json.dumps(cfg))
    # remote code that must never run
    (out / "modeling_internvl_chat.py").write_text("raise SystemExit('remote code ran')\n")
    return out, model


def _same_outputs(a, b, tiles=1):
    x = _pixels(tiles)
    ids = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(x), b.encode_image(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.language_model(ids).logits, b.language_model(ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_original_layout_qwen2_round_trip(tmp_path):
    path, model = _original_dir(tmp_path, QWEN2)
    loaded = load_model(str(path))
    assert loaded.layout == "original" and not loaded.random_init
    assert loaded.template_name == "Hermes-2" and loaded.max_tiles == 6
    assert loaded.image_token_id == loaded.tokenizer.token_id("<IMG_CONTEXT>")
    assert loaded.source["sha256"] and "original" in loaded.weights
    _same_outputs(loaded.model, model)


def test_original_layout_internlm2_round_trip(tmp_path):
    path, model = _original_dir(tmp_path, INTERNLM2)
    keys = json.loads((path / "config.json").read_text())
    assert keys["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]
    loaded = load_model(str(path))
    assert loaded.template_name == "internlm2-chat"
    _same_outputs(loaded.model, model)


def test_hf_native_layout_gives_transformers_outputs(tmp_path):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tok = tiny_tokenizer()
    text = {k: v for k, v in QWEN2.items() if k != "architectures"}
    cfg = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, image_size=[448, 448], patch_size=[56, 56],
                           attention_bias=True),
        text_config=dict(text, vocab_size=len(tok)), downsample_ratio=0.5,
        image_token_id=tok.token_id("<IMG_CONTEXT>"), image_seq_length=16)
    torch.manual_seed(0)
    hf = _random_(InternVLForConditionalGeneration(cfg), 2).eval()
    out = tmp_path / "hf"
    hf.save_pretrained(str(out), safe_serialization=True)
    shutil.copy(TINY_TOKENIZER, out / "tokenizer.json")
    loaded = load_model(str(out))
    assert loaded.layout == "hf"
    x = _pixels(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x), hf.get_image_features(x),
                                   rtol=1e-5, atol=1e-5)
        small = x[:, :, :224, :224]          # another grid: positions resized bicubically
        torch.testing.assert_close(loaded.encode_image(small), hf.get_image_features(small),
                                   rtol=1e-5, atol=1e-5)
        ids = torch.tensor([loaded.prompt_ids(2)])
        want = hf(input_ids=ids, pixel_values=x).logits
        got = loaded.model(ids, x).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_the_same_weights_in_both_layouts_agree(tmp_path):
    """An original-layout checkpoint and its Hugging Face-native conversion (transformers'
    names, q/k/v split) give the same outputs."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    path, _ = _original_dir(tmp_path, QWEN2)
    original = load_model(str(path))
    tok = original.tokenizer
    text = {k: v for k, v in QWEN2.items() if k != "architectures"}
    cfg = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, image_size=[448, 448], patch_size=[56, 56],
                           attention_bias=True),
        text_config=dict(text, vocab_size=len(tok)), image_token_id=original.image_token_id)
    hf = InternVLForConditionalGeneration(cfg).eval()
    state = {}
    d = 32
    for k, v in original.model.state_dict().items():
        k = (k.replace("vision_model.embeddings.class_embedding",
                       "model.vision_tower.embeddings.cls_token")
             .replace("vision_model.embeddings.patch_embedding.",
                      "model.vision_tower.embeddings.patch_embeddings.projection.")
             .replace("vision_model.embeddings.position_embedding",
                      "model.vision_tower.embeddings.position_embeddings")
             .replace("vision_model.encoder.layers.", "model.vision_tower.encoder.layer.")
             .replace(".attn.proj.", ".attention.projection_layer.")
             .replace(".ls1", ".lambda_1").replace(".ls2", ".lambda_2")
             .replace(".norm1.", ".layernorm_before.").replace(".norm2.", ".layernorm_after.")
             .replace("mlp1.0.", "model.multi_modal_projector.layer_norm.")
             .replace("mlp1.1.", "model.multi_modal_projector.linear_1.")
             .replace("mlp1.3.", "model.multi_modal_projector.linear_2.")
             .replace("language_model.model.", "model.language_model.")
             .replace("language_model.lm_head.", "lm_head."))
        if ".attn.qkv." in k:
            for name, part in zip("qkv", v.split(d, dim=0)):
                state[k.replace(".attn.qkv.", f".attention.{name}_proj.")] = part
        else:
            state[k] = v
    assert not hf.load_state_dict(state, strict=False).unexpected_keys
    out = tmp_path / "as-hf"
    hf.save_pretrained(str(out), safe_serialization=True)
    shutil.copy(TINY_TOKENIZER, out / "tokenizer.json")
    native = load_model(str(out))
    _same_outputs(native.model, original.model, tiles=3)
    img = _pixel_image()
    assert native.caption_ids([img], max_new_tokens=6) == original.caption_ids([img],
                                                                              max_new_tokens=6)


def _pixel_image():
    from PIL import Image

    g = torch.Generator().manual_seed(9)
    arr = (torch.rand(224, 300, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr, "RGB")


def test_checkpoint_refusals(tmp_path):
    def err(path):
        with pytest.raises(ToolkitError) as e:
            load_model(str(path))
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "does not exist" in err(tmp_path / "nope")
    path, _ = _original_dir(tmp_path, QWEN2)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    assert "never unpickles" in err(path)
    (path / "pytorch_model.bin").unlink()
    assert "no *.safetensors" in err(path)
    save_file({"vision_model.embeddings.class_embedding": torch.zeros(1, 1, 32)},
              str(path / "model.safetensors"))
    assert "do not match its config.json" in err(path)
    (path / "model.safetensors").write_bytes(b"garbage")
    assert "corrupt or not a safetensors" in err(path)
    (path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert "not InternVL" in err(path)
    (path / "config.json").write_text("{")
    assert "not valid JSON" in err(path)


def test_shape_mismatch_and_missing_tokenizer(tmp_path):
    path, model = _original_dir(tmp_path, QWEN2)
    cfg = json.loads((path / "config.json").read_text())
    cfg["llm_config"]["intermediate_size"] = 128
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ToolkitError, match="has shape"):
        load_model(str(path))
    cfg["llm_config"]["intermediate_size"] = 96
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "tokenizer.json").unlink()
    with pytest.raises(ToolkitError, match="no tokenizer.json"):
        load_model(str(path))


# --- presets and generation ---------------------------------------------------------------------

def test_preset_sizes():
    assert parameter_count(preset="internvl2-1b") == 938_158_976     # InternVL2-1B: 938 M
    assert 2.20e9 < parameter_count(preset="internvl2-2b") < 2.21e9   # InternVL2-2B: 2.2 B
    tiny = load_model(preset="internvl-tiny")
    assert tiny.random_init and "RANDOM" in tiny.weights
    assert parameter_count(preset="internvl-tiny") == sum(p.numel() for p in
                                                          tiny.model.parameters())
    assert tiny.num_image_token == 64 and tiny.image_size == 448
    with pytest.raises(ToolkitError, match="unknown InternVL preset"):
        load_model(preset="internvl-huge")


@pytest.fixture(scope="module")
def tiny():
    return load_model(preset="internvl-tiny", seed=0)


def test_prompt_holds_the_image_tokens(tiny):
    ids = tiny.prompt_ids(3)
    assert ids.count(tiny.image_token_id) == 64 * 3
    embeds, _ = tiny.prefill_embeds(_pixels(3), 3)
    assert embeds.shape == (1, len(ids), 256)
    with pytest.raises(ValueError, match="IMG_CONTEXT"):
        tiny.prefill_embeds(_pixels(2), 3)


def test_caption_is_deterministic(tiny):
    img = _pixel_image()
    first = tiny.caption_ids([img], max_new_tokens=10, min_new_tokens=8)
    assert 8 <= len(first[0]) <= 10
    assert tiny.caption_ids([img], max_new_tokens=10, min_new_tokens=8) == first
    beams = tiny.caption_ids([img], beam_size=3, max_new_tokens=10)
    assert beams == tiny.caption_ids([img], beam_size=3, max_new_tokens=10)
    assert isinstance(tiny.caption([img], max_new_tokens=5)[0], str)
    assert load_model(preset="internvl-tiny", seed=0).caption_ids([img], max_new_tokens=10) \
        == first


def test_decoder_step_loop_equals_generate(tiny):
    """Greedy over ``encode_image`` / ``embed_tokens`` / ``decoder_step`` with the KV cache
    gives transformers' ``generate`` tokens."""
    img = _pixel_image()
    want = tiny.caption_ids([img], max_new_tokens=12, min_new_tokens=0)[0]
    values, tiling = tiny.preprocess(img)
    with torch.no_grad():
        embeds, _ = tiny.prefill_embeds(values, tiling.count)
        logits, cache = tiny.decoder_step(embeds)
        got = []
        for _ in range(12):
            token = int(logits.argmax(-1))
            if token == tiny.eos_id:
                break
            got.append(token)
            logits, cache = tiny.decoder_step(tiny.embed_tokens(torch.tensor([[token]])), cache)
    assert got == want


def test_qwen2_slow_tokenizer_files(tmp_path):
    """InternVL2-1B ships Qwen2's slow files (vocab.json, merges.txt, added_tokens.json), not
    tokenizer.json: they are converted, the added tokens keep their ids."""
    path, _ = _original_dir(tmp_path, QWEN2)
    tiny = json.loads(TINY_TOKENIZER.read_text())
    specials = [t["content"] for t in tiny["added_tokens"]]
    vocab = {k: v - len(specials) for k, v in tiny["model"]["vocab"].items() if k not in specials}
    (path / "vocab.json").write_text(json.dumps(vocab))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tiny["model"]["merges"]]
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (path / "added_tokens.json").write_text(json.dumps(
        {t: len(vocab) + i for i, t in enumerate(specials)}))
    (path / "tokenizer.json").unlink()
    loaded = load_model(str(path))
    tok, ref = loaded.tokenizer, tiny_tokenizer()
    assert any("vocab.json" in n for n in loaded.notes)
    text = "a large red circle to the left of a small blue star."
    assert tok.encode(text) == [i - len(specials) for i in ref.encode(text)]
    assert tok.decode(tok.encode(text)) == text
    assert tok.token_id("<IMG_CONTEXT>") == len(vocab) + 5 == loaded.image_token_id
    assert loaded.prompt_ids(2).count(loaded.image_token_id) == 32
    (path / "added_tokens.json").write_text(json.dumps({"<|endoftext|>": 7}))
    with pytest.raises(ToolkitError, match="do not belong together|in the added tokens"):
        load_model(str(path))


def test_select_layer_takes_that_hidden_state():
    """``select_layer`` -k reads InternViT's ``hidden_states[-k]`` (index 0 = the embeddings)."""
    vision = dict(VISION, num_hidden_layers=3)
    last, _ = build(vision, dict(QWEN2, vocab_size=50), select_layer=-1)
    second, _ = build(vision, dict(QWEN2, vocab_size=50), select_layer=-2)
    _random_(last)
    second.load_state_dict(last.state_dict())
    x = _pixels()
    with torch.no_grad():
        vm = last.vision_model
        h = vm.embeddings(x)
        for layer in vm.encoder.layers[:2]:
            h = layer(h)
        want = pixel_shuffle(h[:, 1:].reshape(1, 8, 8, 32), 0.5).reshape(1, 16, 128)
        torch.testing.assert_close(second.encode_image(x), second.mlp1(want))
        assert not torch.allclose(last.encode_image(x), second.encode_image(x))

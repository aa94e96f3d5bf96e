"""Load InternVL: an original InternVL2 checkpoint directory (``InternVLChatModel``), a Hugging
Face-native one (``InternVLForConditionalGeneration``), or a seeded random preset.

- **Original layout** (InternVL2-1B/2B as published): ``config.json`` with ``vision_config`` and
  ``llm_config`` (``Qwen2ForCausalLM`` or ``InternLM2ForCausalLM``), weights ``vision_model.*``,
  ``mlp1.*``, ``language_model.*``. None of the checkpoint's Python files (``modeling_*.py``,
  trust_remote_code) is run: the config is read as JSON and the weights go into this package's
  own modules (InternLM2 mapped to Llama: ``internlm2.py``).
- **Hugging Face-native layout** (transformers ≥ 4.52, the ``-hf`` repositories): ``config.json``
  with ``model_type`` "internvl", ``vision_config`` / ``text_config``, weights
  ``model.vision_tower.*``, ``model.multi_modal_projector.*``, ``model.language_model.*``,
  ``lm_head.*`` (or the older ``vision_tower.*`` / ``language_model.model.*`` names). Mapped
  onto the same modules, so both layouts export and run through one code path.
- Weights are read from ``*.safetensors`` only (single file or an index of shards); a checkpoint
  with only pickled weights (``*.bin``, ``*.pt``) is refused in one line: unpickling runs code.
- The tokenizer: ``tokenizer.json`` in the checkpoint directory (the torch-free runtime needs
  that form).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ToolkitError, check_positive
from ...core.files import weights_hash
from ..base import LoadedModel
from . import image as image_mod
from . import internlm2
from .default import FALLBACK_PRESET, captioner_source, default_checkpoint
from .model import InternVLChat, VisionConfig
from .prompt import CAPTION_PROMPT, IMG_CONTEXT, chat_prompt, template
from .tokenizer import TextTokenizer, tiny_tokenizer

FAMILY = "internvl"

# InternViT-300M-448px (InternVL2-1B … 8B's vision encoder)
VIT_300M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                intermediate_size=4096, image_size=448, patch_size=14)
# Qwen2-0.5B-Instruct as InternVL2-1B's llm_config has it: InternVL's added tokens in the
# vocabulary, the output projection untied from the embedding (938 M parameters in all, as the
# model card says; tied, it would be 802 M)
QWEN2_05B = dict(model_type="qwen2", vocab_size=151655, hidden_size=896, intermediate_size=4864,
                 num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=32768,
                 tie_word_embeddings=False, hidden_act="silu")
# internlm2-chat-1_8b as InternVL2-2B's llm_config has it
INTERNLM2_18B = dict(model_type="internlm2", vocab_size=92553, hidden_size=2048,
                     intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
                     num_key_value_heads=8, rope_theta=1000000.0, rms_norm_eps=1e-5,
                     max_position_embeddings=32768, rope_scaling={"type": "dynamic", "factor": 2.0},
                     bias=False, tie_word_embeddings=False, hidden_act="silu")


@dataclass(frozen=True)
class Preset:
    vision: dict
    llm: dict
    template: str
    summary: str
    downsample_ratio: float = 0.5
    max_tiles: int = 12


PRESETS = {
    "internvl2-1b": Preset(VIT_300M, QWEN2_05B, "Hermes-2",
                           "InternVL2-1B's shapes: InternViT-300M-448px + MLP + Qwen2-0.5B"),
    "internvl2-2b": Preset(VIT_300M, INTERNLM2_18B, "internlm2-chat",
                           "InternVL2-2B's shapes: InternViT-300M-448px + MLP + InternLM2-1.8B"),
    # small enough to train on this CPU: 448-px tiles and pixel shuffle 0.5 as InternVL2, but
    # 28-px patches (a 16×16 grid → 64 image tokens per tile, not 256), a 4-layer 192-wide ViT
    # and a 4-layer 256-wide Qwen2 over the 624-token caption tokenizer
    "internvl-tiny": Preset(dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                                 intermediate_size=768, image_size=448, patch_size=28),
                            dict(model_type="qwen2", vocab_size=None, hidden_size=256,
                                 intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                 max_position_embeddings=4096, tie_word_embeddings=True,
                                 hidden_act="silu"),
                            "Hermes-2", "small InternVL-architecture model for training here",
                            max_tiles=6),
}


@dataclass
class LoadedInternVL(LoadedModel):
    """The model and what captioning needs around it: the tokenizer, the chat template, the
    tiling limits. ``encode_image`` / ``embed_tokens`` / ``decoder_step`` are the pieces the
    generation layer and the exporter use; ``caption`` is the stock path (transformers'
    ``generate``), the reference the exported forms are checked against."""

    tokenizer: TextTokenizer = None
    template_name: str = "Hermes-2"
    max_tiles: int = 12
    use_thumbnail: bool = True
    layout: str = "preset"           # "original", "hf" or "preset"
    notes: list = field(default_factory=list)

    # --- facts ---
    @property
    def image_size(self) -> int:
        return self.model.vision_config.image_size

    @property
    def num_image_token(self) -> int:
        return self.model.num_image_token

    @property
    def image_token_id(self) -> int:
        return self.model.image_token_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.token_id(template(self.template_name).stop)

    @property
    def pad_id(self) -> int:
        pad = self.model.llm_config.pad_token_id
        return int(pad) if pad is not None else self.eos_id

    # --- inputs ---
    def preprocess(self, source, max_tiles: int | None = None):
        """A path, encoded bytes or a PIL image → (float32 tensor [tiles, 3, S, S], Tiling)."""
        import torch
        from PIL import Image

        max_tiles = self.max_tiles if max_tiles is None else max_tiles
        check_positive(max_tiles=max_tiles)
        img = source if isinstance(source, Image.Image) else image_mod.open_image(source)
        values, tiling = image_mod.pixel_values(img, max_tiles, self.image_size,
                                                self.use_thumbnail)
        return torch.from_numpy(values), tiling

    def prompt_ids(self, tiles: int, question: str = CAPTION_PROMPT) -> list[int]:
        text = chat_prompt(self.template_name, tiles, self.num_image_token, question)
        return self.tokenizer.encode(text, add_bos=template(self.template_name).bos)

    # --- the pieces the generation layer drives ---
    def encode_image(self, pixel_values):
        """[tiles, 3, S, S] → image embeddings [tiles, num_image_token, hidden]."""
        return self.model.encode_image(pixel_values)

    def embed_tokens(self, ids):
        return self.model.embed_tokens(ids)

    def new_cache(self):
        from transformers.cache_utils import DynamicCache

        return DynamicCache()

    def decoder_step(self, inputs_embeds, cache=None, attention_mask=None, position_ids=None):
        """One LLM call over ``inputs_embeds`` [B, T, hidden] after ``cache`` (a transformers
        ``DynamicCache``: the prefill gets an empty one, every later step the returned one):
        (logits of the last position [B, vocab], cache)."""
        cache = self.new_cache() if cache is None else cache
        out = self.model.language_model(inputs_embeds=inputs_embeds, past_key_values=cache,
                                        attention_mask=attention_mask, position_ids=position_ids,
                                        use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    @staticmethod
    def reorder(cache, index):
        cache.reorder_cache(index)
        return cache

    def prefill_embeds(self, pixel_values, tiles: int, question: str = CAPTION_PROMPT):
        """The prompt's embeddings [1, T, hidden] with the image spliced in, and its ids."""
        import torch

        ids = torch.tensor([self.prompt_ids(tiles, question)], dtype=torch.long)
        return self.model.splice(ids, self.encode_image(pixel_values)), ids

    # --- reference captions ---
    def caption(self, images, beam_size: int = 1, max_new_tokens: int = 30,
                min_new_tokens: int = 8, max_tiles: int | None = None,
                question: str = CAPTION_PROMPT) -> list[str]:
        """Captions by transformers' ``generate`` over the spliced embeddings (InternVL's
        ``chat`` path; its caption evaluation: beams 5, or 1 with dynamic tiling, 8–30 new
        tokens), one image at a time."""
        return [self.tokenizer.decode(ids) for ids in
                self.caption_ids(images, beam_size, max_new_tokens, min_new_tokens, max_tiles,
                                 question)]

    def caption_ids(self, images, beam_size: int = 1, max_new_tokens: int = 30,
                    min_new_tokens: int = 8, max_tiles: int | None = None,
                    question: str = CAPTION_PROMPT) -> list[list[int]]:
        import torch

        check_positive(beam_size=beam_size, max_new_tokens=max_new_tokens)
        out = []
        for source in images:
            values, tiling = self.preprocess(source, max_tiles)
            with torch.inference_mode():
                embeds, _ = self.prefill_embeds(values, tiling.count, question)
                mask = torch.ones(embeds.shape[:2], dtype=torch.long)
                gen = self.model.language_model.generate(
                    inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                    num_beams=beam_size, max_new_tokens=max_new_tokens,
                    min_new_tokens=min(min_new_tokens, max_new_tokens),
                    eos_token_id=self.eos_id, pad_token_id=self.pad_id)
            ids = [int(t) for t in gen[0]]
            out.append(ids[:ids.index(self.eos_id)] if self.eos_id in ids else ids)
        return out


# --- building ------------------------------------------------------------------------------

def _language_model(llm: dict):
    """(a transformers causal LM built from ``llm`` (an ``llm_config`` dict), its kind)."""
    kind = llm.get("model_type") or ""
    arch = (llm.get("architectures") or [""])[0]
    if kind == "internlm2" or arch.startswith("InternLM2"):
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM(internlm2.llama_config(llm)), "internlm2"
    if kind in ("qwen2", "llama") or arch.startswith(("Qwen2", "Llama")):
        from transformers import AutoConfig, AutoModelForCausalLM

        # the model's code, not the config, picks attention kernels and dtypes here (InternVL2's
        # llm_config asks for flash_attention_2, which a CPU install does not have)
        drop = ("architectures", "auto_map", "model_type", "attn_implementation", "torch_dtype",
                "dtype", "use_flash_attn", "transformers_version")
        keep = {k: v for k, v in llm.items() if k not in drop and not k.startswith("_")}
        cfg = AutoConfig.for_model("qwen2" if kind == "qwen2" or arch.startswith("Qwen2")
                                   else "llama", **keep)
        return AutoModelForCausalLM.from_config(cfg), cfg.model_type
    raise ToolkitError(f"the LLM {arch or kind!r} is not supported; InternVL2 checkpoints with "
                       "Qwen2, Llama or InternLM2 LLMs are")


def build(vision: dict, llm: dict, downsample_ratio: float = 0.5, select_layer: int = -1,
          image_token_id: int | None = None) -> tuple[InternVLChat, str]:
    """The model (weights as initialised) and the LLM kind ("qwen2", "llama", "internlm2")."""
    language_model, kind = _language_model(llm)
    model = InternVLChat(VisionConfig.from_dict(vision), language_model, downsample_ratio,
                         select_layer, image_token_id)
    return model, kind


def _init_vision(model: InternVLChat, std: float = 0.02) -> None:
    """Seeded random weights for the vision encoder and projector (transformers initialises the
    LLM): normal(0, std) linear weights and embeddings, zero biases, unit norms."""
    import torch

    for m in list(model.vision_model.modules()) + list(model.mlp1.modules()):
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    emb = model.vision_model.embeddings
    torch.nn.init.normal_(emb.class_embedding, std=std)
    torch.nn.init.normal_(emb.position_embedding, std=std)


def _load_preset(name: str, seed: int) -> LoadedInternVL:
    import torch

    if name not in PRESETS:
        raise ToolkitError(f"unknown InternVL preset {name!r}; choose one of "
                           f"{', '.join(PRESETS)}")
    p = PRESETS[name]
    tok = tiny_tokenizer()
    llm = dict(p.llm)
    if llm["vocab_size"] is None:
        llm["vocab_size"] = len(tok)
    llm.setdefault("pad_token_id", 0)
    torch.manual_seed(seed)
    model, _ = build(p.vision, llm, p.downsample_ratio, -1, tok.token_id(IMG_CONTEXT))
    _init_vision(model)
    model.eval()
    notes = []
    if name != "internvl-tiny":
        notes.append("the real tokenizer is not available offline: prompts use the small "
                     "caption tokenizer (its ids fit the full vocabulary)")
    source = {"preset": name, "seed": seed, "random_init": True,
              "weights": f"preset {name} — random initialisation (seeded), not a trained model"}
    return LoadedInternVL(family=FAMILY, model=model, source=source, tokenizer=tok,
                          template_name=p.template, max_tiles=p.max_tiles, layout="preset",
                          notes=notes)


# --- checkpoints ---------------------------------------------------------------------------

def load_model(checkpoint: str | None = None, preset: str | None = None,
               seed: int = 0) -> LoadedInternVL:
    """Load ``checkpoint`` (either layout, see the module docstring) or build ``preset``; with
    neither, the default: the trained captioner when it is installed (``default.py``), else the
    ``internvl-tiny`` preset (random weights)."""
    if checkpoint and preset:
        raise ToolkitError("give either --checkpoint or --preset, not both")
    if not checkpoint and not preset and (default := default_checkpoint()) is not None:
        loaded = load_dir(default)          # the trained captioner, the default model
        loaded.source = captioner_source(default)
    elif not checkpoint:
        loaded = _load_preset(preset or FALLBACK_PRESET, seed)
    else:
        loaded = load_dir(Path(checkpoint).expanduser())
    loaded.seed = seed
    return loaded


def read_config(path: Path) -> dict:
    if not path.exists():
        raise ToolkitError(f"checkpoint {path} does not exist; give an InternVL2 checkpoint "
                           "directory (config.json + *.safetensors + tokenizer.json)")
    if not path.is_dir():
        raise ToolkitError(f"checkpoint {path} is a file; point --checkpoint at the directory "
                           "that holds config.json and the weights")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ToolkitError(f"checkpoint {path} has no config.json; it is not an InternVL "
                           "checkpoint directory")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ToolkitError(f"{cfg_file} is not valid JSON; the checkpoint is corrupt") from None
    if not isinstance(cfg, dict):
        raise ToolkitError(f"{cfg_file} is not a JSON object; the checkpoint is corrupt")
    return cfg


def layout_of(cfg: dict) -> str:
    """"original" (InternVLChatModel), "hf" (InternVLForConditionalGeneration) or an error."""
    arch = cfg.get("architectures") or []
    if "InternVLChatModel" in arch or ("llm_config" in cfg and "vision_config" in cfg):
        return "original"
    if "InternVLForConditionalGeneration" in arch or cfg.get("model_type") == "internvl":
        return "hf"
    raise ToolkitError(f"config.json describes {arch or cfg.get('model_type')!r}, not InternVL "
                       "(InternVLChatModel or InternVLForConditionalGeneration)")


def read_safetensors(path: Path) -> dict:
    """Every tensor of the directory's ``*.safetensors`` (one file, or the shards an
    ``*.safetensors.index.json`` names). Pickled weights are never read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = sorted(path.glob("*.safetensors.index.json"))
    if index:
        try:
            files = sorted(set(json.loads(index[0].read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError, AttributeError):
            raise ToolkitError(f"{index[0]} is not a valid safetensors index") from None
        shards = [path / f for f in files]
    else:
        shards = sorted(path.glob("*.safetensors"))
    if not shards:
        pickled = sorted(p.name for p in path.iterdir()
                         if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickled:
            raise ToolkitError(f"{path} holds only pickled weights ({', '.join(pickled[:3])}); "
                               "the toolkit never unpickles a checkpoint (it can run code) — "
                               "convert it to safetensors first")
        raise ToolkitError(f"{path} has no *.safetensors weights")
    state = {}
    for shard in shards:
        if not Path(shard).name or ".." in Path(shard).parts or not shard.is_file():
            raise ToolkitError(f"the safetensors shard {shard} is missing")
        try:
            state.update(load_file(str(shard)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ToolkitError(f"cannot read {shard} ({str(exc).splitlines()[0][:120]}); it is "
                               "corrupt or not a safetensors file") from None
    return state


def _tokenizer(path: Path, bos: bool, notes: list) -> TextTokenizer:
    file = path / "tokenizer.json"
    if not file.is_file():
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            notes.append("tokenizer.json built from vocab.json + merges.txt (Qwen2's BPE) and "
                         "the added tokens")
            return qwen2_tokenizer(path)
        spm = ""
        if (path / "tokenizer.model").is_file():
            spm = (" (InternLM2's tokenizer.model: transformers' LlamaTokenizerFast(vocab_file="
                   "'tokenizer.model').save_pretrained(DIR) writes one without remote code)")
        raise ToolkitError(f"{path} has no tokenizer.json (nor Qwen2's vocab.json + merges.txt); "
                           f"save the checkpoint's tokenizer in the fast form{spm} — the "
                           "runtime reads that file without transformers")
    tok = TextTokenizer.from_file(file)
    if bos:   # InternLM2's tokenizer starts every text with its BOS (<s>)
        name = _bos_token(path) or "<s>"
        if tok.tk.token_to_id(name) is None:
            notes.append(f"the template adds a BOS token but tokenizer.json has no {name!r}: "
                         "prompts start without one")
        else:
            tok.bos_id = tok.token_id(name)
    return tok


def qwen2_tokenizer(path: Path) -> TextTokenizer:
    """Qwen2's slow files (``vocab.json``, ``merges.txt``) as a ``tokenizers`` object —
    transformers' own conversion (Qwen2's pre-tokenizer regex, byte-level) — plus the added
    tokens of ``added_tokens.json`` (or ``tokenizer_config.json``'s ``added_tokens_decoder``) at
    their stated ids (InternVL2-1B's ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` …)."""
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    try:
        fast = Qwen2TokenizerFast(vocab_file=str(path / "vocab.json"),
                                  merges_file=str(path / "merges.txt"))
    except (OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"cannot read the tokenizer files in {path} "
                           f"({str(exc).splitlines()[0][:120]})") from None
    tk = fast.backend_tokenizer
    for token, i in sorted(_added_tokens(path).items(), key=lambda kv: kv[1]):
        have = tk.token_to_id(token)
        if have is None:
            n = tk.get_vocab_size(with_added_tokens=True)
            if n != i:
                raise ToolkitError(f"{path}: added token {token!r} has id {i}, but the "
                                   f"vocabulary would give it {n}; the tokenizer files do "
                                   "not belong together")
            tk.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        elif have != i:
            raise ToolkitError(f"{path}: token {token!r} is {have} in vocab.json but {i} in "
                               "the added tokens")
    return TextTokenizer(tk, source=str(path / "vocab.json"))


def _added_tokens(path: Path) -> dict:
    try:
        if (path / "added_tokens.json").is_file():
            return {str(k): int(v) for k, v in
                    json.loads((path / "added_tokens.json").read_text()).items()}
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            dec = json.loads(cfg.read_text()).get("added_tokens_decoder") or {}
            return {str(v["content"]): int(k) for k, v in dec.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError,
            ValueError):
        raise ToolkitError(f"the added-token files in {path} are not valid JSON maps") from None
    return {}


def _bos_token(path: Path) -> str | None:
    try:
        bos = json.loads((path / "tokenizer_config.json").read_text()).get("bos_token")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return bos.get("content") if isinstance(bos, dict) else bos


def load_dir(path: Path) -> LoadedInternVL:
    cfg = read_config(path)
    kind = layout_of(cfg)
    state = read_safetensors(path)
    if kind == "original":
        model, tmpl, max_tiles, thumb, notes = _original(path, cfg, state)
    else:
        model, tmpl, max_tiles, thumb, notes = _hf_native(path, cfg, state)
    model.eval()
    form = "original InternVLChatModel" if kind == "original" else "Hugging Face-native"
    source = {"checkpoint": str(path), "format": kind, "random_init": False,
              "sha256": weights_hash(path),
              "weights": f"InternVL checkpoint {path} ({form} layout)"}
    tok = _tokenizer(path, template(tmpl).bos, notes)
    if model.image_token_id is None:
        model.image_token_id = tok.token_id(IMG_CONTEXT)
    return LoadedInternVL(family=FAMILY, model=model, source=source, tokenizer=tok,
                          template_name=tmpl,
                          max_tiles=max_tiles, use_thumbnail=thumb, layout=kind, notes=notes)


def _load_state(model, state: dict, path: Path) -> None:
    """Strict: every parameter present with its shape, nothing left over (tied output weights
    may be absent)."""
    import torch

    own = model.state_dict()
    tied = bool(getattr(model.language_model.config, "tie_word_embeddings", False))
    if tied:
        own.pop("language_model.lm_head.weight", None)
        state.pop("language_model.lm_head.weight", None)
    missing = sorted(set(own) - set(state))
    extra = sorted(k for k in set(state) - set(own) if not k.endswith("rotary_emb.inv_freq"))
    if missing or extra:
        what = (f"missing {len(missing)} (e.g. {missing[0]})" if missing else "") + \
               ("; " if missing and extra else "") + \
               (f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "")
        raise ToolkitError(f"the weights in {path} do not match its config.json: {what}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ToolkitError(f"the weights in {path} do not match its config.json: {k} has "
                               f"shape {tuple(state[k].shape)}, the config says {tuple(v.shape)}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    if tied:
        model.language_model.tie_weights()


def _original(path: Path, cfg: dict, state: dict):
    vision, llm = dict(cfg["vision_config"]), dict(cfg["llm_config"])
    if cfg.get("ps_version", "v2") != "v2":
        raise ToolkitError(f"{path}: ps_version {cfg.get('ps_version')!r} is not supported "
                           "(InternVL2 checkpoints use v2)")
    if cfg.get("force_image_size"):
        vision["image_size"] = int(cfg["force_image_size"])
    model, kind = build(vision, llm, float(cfg.get("downsample_ratio", 0.5)),
                        int(cfg.get("select_layer", -1)), cfg.get("img_context_token_id"))
    if kind == "internlm2":
        heads = int(llm["num_attention_heads"])
        kv = int(llm.get("num_key_value_heads") or heads)
        prefix = "language_model."
        lm = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        state.update({prefix + k: v for k, v in internlm2.to_llama(lm, heads, kv).items()})
    _load_state(model, state, path)
    tmpl = cfg.get("template") or ("internlm2-chat" if kind == "internlm2" else "Hermes-2")
    template(tmpl)
    max_tiles = int(cfg.get("max_dynamic_patch", 12)) if cfg.get("dynamic_image_size", True) else 1
    return model, tmpl, max_tiles, bool(cfg.get("use_thumbnail", True)), []


# Hugging Face-native names → InternVL's (after the older save format is normalised)
_VT, _VL = r"^model\.vision_tower\.encoder\.layer\.(\d+)\.", r"vision_model.encoder.layers.\1."
HF_RENAMES = [
    (r"^model\.vision_tower\.embeddings\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^model\.vision_tower\.embeddings\.patch_embeddings\.projection\.",
     "vision_model.embeddings.patch_embedding."),
    (r"^model\.vision_tower\.embeddings\.position_embeddings$",
     "vision_model.embeddings.position_embedding"),
    (_VT + r"attention\.projection_layer\.", _VL + "attn.proj."),
    (_VT + r"attention\.(q_norm|k_norm)\.", _VL + r"attn.\2."),
    (_VT + r"lambda_1$", _VL + "ls1"),
    (_VT + r"lambda_2$", _VL + "ls2"),
    (_VT + r"layernorm_before\.", _VL + "norm1."),
    (_VT + r"layernorm_after\.", _VL + "norm2."),
    (_VT + r"mlp\.", _VL + "mlp."),
    (r"^model\.multi_modal_projector\.layer_norm\.", "mlp1.0."),
    (r"^model\.multi_modal_projector\.linear_1\.", "mlp1.1."),
    (r"^model\.multi_modal_projector\.linear_2\.", "mlp1.3."),
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
]
HF_OLD_NAMES = [(r"^language_model\.model\.", "model.language_model."),
                (r"^vision_tower\.", "model.vision_tower."),
                (r"^multi_modal_projector\.", "model.multi_modal_projector."),
                (r"^language_model\.lm_head\.", "lm_head.")]


def hf_to_original(state: dict) -> dict:
    """A Hugging Face-native InternVL state dict → InternVL's names (the vision attention's
    q/k/v projections fused into ``attn.qkv`` in q, k, v order)."""
    import torch

    out, qkv = {}, {}
    for key, value in state.items():
        for pattern, repl in HF_OLD_NAMES:
            key = re.sub(pattern, repl, key)
        m = re.match(r"^model\.vision_tower\.encoder\.layer\.(\d+)\.attention\.(q|k|v)_proj\."
                     r"(weight|bias)$", key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        for pattern, repl in HF_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    for (layer, kind), p in qkv.items():
        out[f"vision_model.encoder.layers.{layer}.attn.qkv.{kind}"] = torch.cat(
            [p["q"], p["k"], p["v"]], dim=0)
    return out


def _hf_native(path: Path, cfg: dict, state: dict):
    try:
        from transformers import InternVLConfig
    except ImportError:
        import transformers

        raise ToolkitError(f"{path} is in the Hugging Face-native InternVL layout, which needs "
                           f"transformers >= 4.52 (installed: {transformers.__version__}); give "
                           "the original InternVL2 checkpoint instead") from None
    c = InternVLConfig(**{k: v for k, v in cfg.items() if k not in ("architectures",)})
    v = c.vision_config
    if c.vision_feature_select_strategy != "default":
        raise ToolkitError(f"{path}: vision_feature_select_strategy "
                           f"{c.vision_feature_select_strategy!r} is not supported (InternVL "
                           "drops the CLS token: 'default')")
    if not v.use_absolute_position_embeddings or not v.use_mean_pooling:
        raise ToolkitError(f"{path}: a vision tower without absolute positions or with a final "
                           "LayerNorm (use_mean_pooling false) is not InternViT")
    if c.projector_hidden_act != "gelu":
        raise ToolkitError(f"{path}: projector_hidden_act {c.projector_hidden_act!r} is not "
                           "supported (InternVL's projector uses gelu)")
    vision = dict(hidden_size=v.hidden_size, num_hidden_layers=v.num_hidden_layers,
                  num_attention_heads=v.num_attention_heads,
                  intermediate_size=v.intermediate_size, image_size=int(v.image_size[0]),
                  patch_size=int(v.patch_size[0]), num_channels=v.num_channels,
                  qkv_bias=bool(v.attention_bias), qk_normalization=bool(v.use_qk_norm),
                  norm_type=v.norm_type, layer_norm_eps=v.layer_norm_eps,
                  initializer_factor=v.layer_scale_init_value, hidden_act=v.hidden_act)
    llm = c.text_config.to_dict()
    model, kind = build(vision, llm, float(c.downsample_ratio), int(c.vision_feature_layer),
                        int(c.image_token_id))
    mapped = {k: t for k, t in hf_to_original(state).items()
              if not k.endswith("embeddings.mask_token")}   # used by pre-training only
    if not vision["qkv_bias"]:   # HF-native q/k/v without bias: InternViT's fused one has none
        mapped = {k: t for k, t in mapped.items() if not k.endswith("attn.qkv.bias")}
    _load_state(model, mapped, path)
    tmpl = "internlm2-chat" if kind == "internlm2" else "Hermes-2"
    return model, tmpl, 12, True, ["Hugging Face-native layout: chat template assumed "
                                   f"{tmpl} (the config does not name one)"]


def parameter_count(checkpoint: str | None = None, preset: str | None = None) -> int | None:
    """Parameters ``load_model`` would load, counted on the meta device (no memory, no
    weights read); None when the configuration cannot be read."""
    import torch

    if not checkpoint and not preset:
        checkpoint = default_checkpoint()
    try:
        if checkpoint:
            cfg = read_config(Path(checkpoint).expanduser())
            if layout_of(cfg) != "original":
                return None
            vision = dict(cfg["vision_config"])
            if cfg.get("force_image_size"):
                vision["image_size"] = int(cfg["force_image_size"])
            llm, ratio = dict(cfg["llm_config"]), float(cfg.get("downsample_ratio", 0.5))
        else:
            p = PRESETS.get(preset or "internvl-tiny")
            if p is None:
                return None
            vision, llm, ratio = p.vision, dict(p.llm), p.downsample_ratio
            if llm["vocab_size"] is None:
                llm["vocab_size"] = len(tiny_tokenizer())
        with torch.device("meta"):
            model, _ = build(vision, llm, ratio)
        return sum(p.numel() for p in model.parameters())
    except (ToolkitError, KeyError, TypeError, ValueError):
        return None

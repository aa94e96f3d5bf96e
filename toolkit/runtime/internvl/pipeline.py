"""Image captioning over any backend: InternVL's preprocessing (``models/internvl/image.py``)
→ the vision graph → the chat prompt with the image embeddings spliced in at ``<IMG_CONTEXT>`` →
the shared search (``runtime/generate``: greedy, beam) over the cached decoder step.

InternVL is decoder-only, so the "encoder" of ``EncoderDecoder`` is the vision graph and there
is no cross K/V: what the search carries as ``cross`` is the prompt's spliced embeddings
``inputs_embeds`` [images, T, hidden], read by the prefill (the decoder's first call) and giving
the search its row count; every later step feeds the embeddings of the chosen tokens, gathered
from the exported table in NumPy (``embed_tokens.npy``). InternVL's caption evaluation: 8–30
new tokens, the answer ends at ``<|im_end|>``; one image at a time (prompts differ with the tile
count), as InternVL's own evaluation captions them.

Torch-free: an artifact runs on onnxruntime (or TensorRT) with neither PyTorch nor transformers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ...core import schema
from ...core.errors import ToolkitError, check_positive
from ...export.manifest import inside
from ...models.internvl import image as image_mod
from ...models.internvl.prompt import CAPTION_PROMPT, chat_prompt, splice_embeddings
from ...models.internvl.tokenizer import TextTokenizer
from ..generate import EncoderDecoder, LogitFilter, SearchOptions
from ..generate.pipeline import kv_cache
from ..graphs import Graphs
from ..session import Session

MIN_NEW_TOKENS = 8      # InternVL's caption evaluation
MAX_NEW_TOKENS = 30


@dataclass
class MinNewTokens(LogitFilter):
    """No end token before ``count`` tokens are generated (transformers' ``min_new_tokens``)."""

    eos: int
    count: int

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        if step < self.count:
            logits[:, self.eos] = -np.inf


@dataclass
class Caption:
    text: str
    tokens: list[int]
    tiles: int
    sum_logprob: float = 0.0
    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    step_ms: list[float] = field(default_factory=list)   # the cached steps after the prefill


class InternVLPipeline(EncoderDecoder):
    def __init__(self, vision: Session, decoder: Session, config: dict,  # noqa: PLR0913
                 tokenizer: TextTokenizer, table: np.ndarray, random_init: bool, source: dict,
                 backend: str, precision: str):
        super().__init__(vision, decoder, kv_cache(config["layers"], config["kv_heads"],
                                                   config["head_dim"]), backend, precision)
        self.config = config
        self.tokenizer = tokenizer
        self.table = np.ascontiguousarray(table, np.float32)
        self.random_init = random_init
        self.source = source
        self.eos = int(config["eos_id"])
        self.image_token = int(config["image_token_id"])
        self.image_size = int(config["image_size"])
        self.per_tile = int(config["tokens_per_tile"])
        self.max_tiles = int(config["max_tiles"])
        self.use_thumbnail = bool(config["use_thumbnail"])
        self.max_rows = int(config.get("max_rows", 8))
        self.max_new = int(config.get("max_new_tokens", 64))

    # -- the decoder step: the prompt's embeddings first, then the table's rows ---------------
    def step(self, ids: np.ndarray, past: dict, cross: dict) -> tuple[np.ndarray, dict]:
        prompt = cross["inputs_embeds"]
        if ids.shape[1] == prompt.shape[1] and ids.shape[0] == prompt.shape[0] \
                and ids.shape[1] > 1:
            embeds = prompt                                  # the prefill (empty cache)
        else:
            embeds = self.table[ids]                         # [rows, 1, hidden]
        out = self.decoder.run_device({"inputs_embeds": embeds, **past})
        logits = self.decoder.to_host(out["logits"])
        return logits, {c.past: out[c.present] for c in self.cache}

    # -- inputs ---------------------------------------------------------------------------------
    def preprocess(self, source, max_tiles: int | None = None):
        """A path, encoded bytes or a PIL image → (float32 [tiles, 3, S, S], Tiling)."""
        from PIL import Image

        max_tiles = self.max_tiles if max_tiles is None else max_tiles
        check_positive(max_tiles=max_tiles)
        if max_tiles > self.max_tiles:
            raise ToolkitError(f"--max-tiles is at most {self.max_tiles} for this model (its "
                               f"exported limit; got {max_tiles})")
        img = source if isinstance(source, Image.Image) else image_mod.open_image(source)
        return image_mod.pixel_values(img, max_tiles, self.image_size, self.use_thumbnail)

    def prompt_ids(self, tiles: int, question: str = CAPTION_PROMPT) -> list[int]:
        text = chat_prompt(self.config["template"], tiles, self.per_tile, question)
        bos = self.config.get("bos_id")
        return ([int(bos)] if bos is not None else []) + self.tokenizer.encode(text)

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        """[tiles, 3, S, S] → image embeddings [tiles, tokens_per_tile, hidden] (host)."""
        out = self.encoder.run({"pixel_values": np.ascontiguousarray(pixel_values, np.float32)})
        return out["image_embeds"]

    # -- captioning -----------------------------------------------------------------------------
    def caption_one(self, source, beam_size: int = 1, max_tiles: int | None = None,
                    max_new_tokens: int = MAX_NEW_TOKENS, min_new_tokens: int = MIN_NEW_TOKENS,
                    question: str = CAPTION_PROMPT,
                    stop: Callable[[], bool] | None = None) -> Caption:
        check_positive(beam_size=beam_size, max_new_tokens=max_new_tokens)
        if beam_size > self.max_rows:
            raise ToolkitError(f"--beam-size is at most {self.max_rows} for this model (its "
                               f"exported decoder rows; got {beam_size})")
        if max_new_tokens > self.max_new:
            raise ToolkitError(f"at most {self.max_new} new tokens for this model (got "
                               f"{max_new_tokens})")
        values, tiling = self.preprocess(source, max_tiles)
        t0 = time.perf_counter()
        image = self.encode(values)
        vision_ms = (time.perf_counter() - t0) * 1e3
        ids = self.prompt_ids(tiling.count, question)
        embeds = splice_embeddings(ids, self.table, image, self.image_token)[None]
        filters = [MinNewTokens(self.eos, min(min_new_tokens, max_new_tokens))]
        res = self.generate({"inputs_embeds": embeds}, ids, self.eos, filters,
                            SearchOptions(beam_size=beam_size, max_new_tokens=max_new_tokens),
                            max_new_tokens, stop=stop)
        h = res.hypotheses[0]
        return Caption(self.tokenizer.decode(h.tokens), list(h.tokens), tiling.count,
                       h.sum_logprob, vision_ms, res.step_ms[0] if res.step_ms else 0.0,
                       res.step_ms[1:])

    def caption(self, paths_or_images: Sequence, beam_size: int = 1,
                max_tiles: int | None = None, **kwargs) -> list[Caption]:
        """Captions of images (paths, encoded bytes or PIL images), one image at a time."""
        if not paths_or_images:
            raise ToolkitError("nothing to caption: give an image")
        return [self.caption_one(s, beam_size, max_tiles, **kwargs) for s in paths_or_images]


# ------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------

def check_config(cfg: dict, graphs: Graphs) -> None:
    where = f"model_config of {graphs.artifact or 'the model'}"
    for key, hi in (("hidden_size", 65536), ("layers", 512), ("heads", 1024),
                    ("kv_heads", 1024), ("head_dim", 4096), ("vocab_size", 10_000_000),
                    ("image_size", 8192), ("tokens_per_tile", 65536), ("max_tiles", 64)):
        schema.field(cfg, key, int, where, 1, hi)
    for key in ("eos_id", "image_token_id"):
        schema.field(cfg, key, int, where, 0, cfg["vocab_size"])
    schema.field(cfg, "template", str, where)
    dec = graphs.sessions["decoder"]
    have = {t.name for t in dec.inputs}
    need = {c.past for c in kv_cache(cfg["layers"], cfg["kv_heads"], cfg["head_dim"])}
    if dec.inputs and not need <= have:
        raise ToolkitError(f"{where} describes a decoder cache ({', '.join(sorted(need - have))})"
                           " the decoder graph does not take; re-export the artifact")


def table_from_artifact(artifact, cfg: dict) -> np.ndarray:
    path = inside(artifact, cfg["embed_table"], "token embedding table")
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"cannot read {path} ({str(exc).splitlines()[0][:120]}); "
                           "re-export the artifact") from None
    if table.ndim != 2 or table.shape != (cfg["vocab_size"], cfg["hidden_size"]):
        raise ToolkitError(f"{path} holds a {table.shape} table, the model_config says "
                           f"({cfg['vocab_size']}, {cfg['hidden_size']}); re-export the artifact")
    return table


def from_graphs(graphs: Graphs) -> InternVLPipeline:
    cfg = graphs.model_config
    check_config(cfg, graphs)
    loaded = graphs.loaded
    if loaded is not None:   # the model's own tokenizer and table (no import of torch here)
        tokenizer = loaded.tokenizer
        table = loaded.model.language_model.get_input_embeddings().weight.detach().float() \
            .cpu().numpy()
    else:
        tokenizer = TextTokenizer.from_file(inside(graphs.artifact, cfg["tokenizer"],
                                                   "tokenizer"))
        table = table_from_artifact(graphs.artifact, cfg)
    return InternVLPipeline(graphs.sessions["vision"], graphs.sessions["decoder"], cfg,
                            tokenizer, table, graphs.random_init, graphs.source, graphs.backend,
                            graphs.precision)

"""Hugging Face ``MarianMTModel`` (the OPUS-MT architecture: a standard Transformer decoder with
self-attention) behind the same interface as the Bergamot student, so one searcher serves both.
The decoder state is transformers' key/value cache; the cross-attention keys and values are
filled by the first step and kept in it."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...core.errors import ToolkitError


class HFMemory(NamedTuple):
    states: torch.Tensor     # encoder output [B, S, d]
    mask: torch.Tensor       # [B, S], True on real tokens
    cross: tuple = ()        # kept inside the cache for this model


class HFMarian(torch.nn.Module):
    """``encode`` / ``initial_state`` / ``decoder_step`` / ``reorder`` over a MarianMTModel."""

    def __init__(self, model):
        super().__init__()
        self.hf = model.eval()
        c = model.config
        self.config = c
        self.start_id = int(c.decoder_start_token_id if c.decoder_start_token_id is not None
                            else c.pad_token_id)
        self.pad_id = c.pad_token_id

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> HFMemory:
        if src_mask is None:
            src_mask = torch.ones_like(src_ids, dtype=torch.bool)
        out = self.hf.get_encoder()(input_ids=src_ids, attention_mask=src_mask.long())
        return HFMemory(out.last_hidden_state, src_mask)

    def initial_state(self, batch: int):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        return EncoderDecoderCache(DynamicCache(), DynamicCache())

    def decoder_step(self, tokens: torch.Tensor, state, memory: HFMemory, vocab=None):
        if vocab is not None:
            raise ToolkitError("the lexical shortlist is read for Bergamot models only; "
                               "Hugging Face Marian checkpoints have none")
        out = self.hf.model.decoder(input_ids=tokens[:, None],
                                    encoder_hidden_states=memory.states,
                                    encoder_attention_mask=memory.mask.long(),
                                    past_key_values=state, use_cache=True)
        logits = self.hf.lm_head(out.last_hidden_state[:, 0]) + self.hf.final_logits_bias[0]
        if self.pad_id is not None:   # Marian never emits <pad> (OPUS-MT's bad_words_ids)
            logits[:, self.pad_id] = float("-inf")
        return logits, out.past_key_values

    @staticmethod
    def reorder(state, memory: HFMemory, index: torch.Tensor):
        state.reorder_cache(index)
        return state, HFMemory(memory.states[index], memory.mask[index])

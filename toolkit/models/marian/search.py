"""Greedy and beam search in PyTorch over the models' ``encode`` / ``decoder_step`` interface —
the reference the exported forms are checked against (the runtime has its own searcher).

Marian's rules: output length at most ``max_length_factor`` × the source length (with its
``</s>``); beam hypotheses that end are set aside and the beam narrows by one; the best is the
highest log-probability divided by length ** ``normalize`` (length counting ``</s>``).
"""

from __future__ import annotations

import math

import torch


def pad(batch: list[list[int]], pad_id: int = 0):
    """Right-padded ids [B, S] and the mask (True on real tokens)."""
    width = max(len(row) for row in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, row in enumerate(batch):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = True
    return ids, mask


def limit(src_len: int, factor: float) -> int:
    return max(1, int(math.ceil(factor * src_len)))


def _allowed(model, shortlist, rows: list[list[int]]):
    if shortlist is None:
        return None
    ids = [i for row in rows for i in row]
    return torch.from_numpy(shortlist.allowed(ids, model.config.vocab_size)).long()


@torch.inference_mode()
def greedy(model, batch: list[list[int]], eos_id: int = 0, factor: float = 2.5,
           shortlist=None, pad_id: int = 0) -> list[list[int]]:
    """Greedy decoding of a batch of source id lists → target ids (without ``</s>``)."""
    ids, mask = pad(batch, pad_id)
    memory = model.encode(ids, mask)
    vocab = _allowed(model, shortlist, batch)
    b = len(batch)
    limits = torch.tensor([limit(len(row), factor) for row in batch])
    state = model.initial_state(b)
    tokens = torch.full((b,), model.start_id, dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    out: list[list[int]] = [[] for _ in range(b)]
    for step in range(int(limits.max())):
        logits, state = model.decoder_step(tokens, state, memory, vocab)
        best = logits.argmax(-1)
        tokens = vocab[best] if vocab is not None else best
        for i in torch.nonzero(~done).flatten().tolist():
            t = int(tokens[i])
            if t == eos_id:
                done[i] = True
            else:
                out[i].append(t)
                if step + 1 >= limits[i]:
                    done[i] = True
        if bool(done.all()):
            break
    return out


@torch.inference_mode()
def beam(model, src: list[int], beam_size: int = 4, eos_id: int = 0, factor: float = 2.5,
         normalize: float = 1.0, shortlist=None) -> list[int]:
    """Beam search for one sentence; returns the best hypothesis (without ``</s>``)."""
    ids, mask = pad([src])
    memory = model.encode(ids, mask)
    vocab = _allowed(model, shortlist, [src])
    state = model.initial_state(1)
    tokens = torch.full((1,), model.start_id, dtype=torch.long)
    scores = torch.zeros(1)
    hyps: list[list[int]] = [[]]
    finished: list[tuple[float, list[int]]] = []
    max_len = limit(len(src), factor)
    for step in range(max_len):
        logits, state = model.decoder_step(tokens, state, memory, vocab)
        logp = torch.log_softmax(logits.float(), dim=-1)
        width = beam_size - len(finished)
        total = (scores[:, None] + logp).reshape(-1)
        top = torch.topk(total, min(2 * width, total.numel()))
        keep_rows, keep_tokens, keep_scores, keep_hyps = [], [], [], []
        n = logp.shape[-1]
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, col = divmod(flat, n)
            token = int(vocab[col]) if vocab is not None else col
            if token == eos_id or step + 1 == max_len:
                words = hyps[row] + ([] if token == eos_id else [token])
                finished.append((score / (len(hyps[row]) + 1) ** normalize, words))
                if len(finished) >= beam_size:
                    break
            else:
                keep_rows.append(row)
                keep_tokens.append(token)
                keep_scores.append(score)
                keep_hyps.append(hyps[row] + [token])
            if len(keep_rows) + len(finished) >= beam_size:
                break
        if not keep_rows or len(finished) >= beam_size:
            break
        index = torch.tensor(keep_rows, dtype=torch.long)
        state, memory = model.reorder(state, memory, index)
        tokens = torch.tensor(keep_tokens, dtype=torch.long)
        scores = torch.tensor(keep_scores)
        hyps = keep_hyps
    if not finished:
        return hyps[0]
    return max(finished, key=lambda f: f[0])[1]

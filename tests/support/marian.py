"""A small Hugging Face MarianMTModel saved in OPUS-MT's layout (random weights, the packaged
en-pt SentencePiece as both vocabularies): what the HF-Marian paths are tested on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def opus_mt_dir(tmp_path: Path, seed: int = 0, width: int = 32):
    """(directory, the transformers model, the <pad> id) of a tiny OPUS-MT-shaped model."""
    import sentencepiece
    import torch
    from transformers import MarianConfig, MarianMTModel

    from toolkit.models.marian.loading import package_pairs

    spm = next(package_pairs()[("en", "pt")].glob("vocab.*.spm"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    vocab = {sp.IdToPiece(i): i for i in range(sp.GetPieceSize())}
    vocab["<pad>"] = pad = len(vocab)
    torch.manual_seed(seed)
    cfg = MarianConfig(vocab_size=pad + 1, d_model=width, encoder_layers=2, decoder_layers=2,
                       encoder_attention_heads=2, decoder_attention_heads=2,
                       encoder_ffn_dim=2 * width, decoder_ffn_dim=2 * width, pad_token_id=pad,
                       decoder_start_token_id=pad, eos_token_id=0, max_position_embeddings=128,
                       scale_embedding=True)
    hf = MarianMTModel(cfg).eval()
    d = tmp_path / "opus-mt-en-pt"
    hf.save_pretrained(d)
    shutil.copy(spm, d / "source.spm")
    shutil.copy(spm, d / "target.spm")
    (d / "vocab.json").write_text(json.dumps(vocab))
    return d, hf, pad

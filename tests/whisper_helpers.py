"""Small Whisper models the tests build themselves (no downloads)."""

from pathlib import Path


def save_small_checkpoint(path: Path, mels: int = 128, vocab: int = 51866, seed: int = 0) -> Path:
    """A Whisper checkpoint directory with non-preset dimensions (no tokenizer files)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    eot = 50256 if vocab == 51864 else 50257
    cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=mels, d_model=64, encoder_layers=2,
                        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
                        max_target_positions=448, decoder_start_token_id=eot + 1,
                        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.save_pretrained(str(path))
    return path

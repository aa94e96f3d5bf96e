"""One place for the small models the tests build (no downloads): a toy two-layer graph plan,
the smallest preset of every registered family (loaded once per session), and small Whisper
checkpoints with non-preset dimensions."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from toolkit import registry
from toolkit.export.onnx import export_plan
from toolkit.export.spec import ExportPlan, GraphSpec, Profile


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(16, 32)
        self.ln = torch.nn.LayerNorm(32)
        self.fc2 = torch.nn.Linear(32, 8)

    def forward(self, x):
        return (self.fc2(torch.relu(self.ln(self.fc1(x)))),)


def toy_plan(module=None) -> ExportPlan:
    """A one-graph plan ("toy": x [B, S, 16] → y [B, S, 8]) with real-valued feeds."""
    module = module or Toy()
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((2, 5, 16)).astype(np.float32)} for _ in range(4)]
    spec = GraphSpec(name="toy", module=module, input_names=["x"], output_names=["y"],
                     dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}},
                     example_inputs=lambda: (torch.randn(1, 3, 16),),
                     profiles={"x": Profile([1, 1, 16], [1, 5, 16], [4, 64, 16])})
    return ExportPlan(family="toy", graphs=[spec], validation_feeds=lambda: {"toy": feeds},
                      calibration_feeds=lambda: {"toy": feeds}, source={"preset": "toy",
                                                                        "random_init": True},
                      model_config={"width": 16})


@functools.lru_cache(maxsize=None)
def tiny(family: str):
    """The family's smallest preset with seed 0 (shared: do not modify it)."""
    fam = registry.get(family)
    return fam.load_model(preset=fam.test_preset, seed=0)


def export(loaded, precision, out, calib_data=None) -> dict:
    """Export a loaded model the way `toolkit export` does (its family's plan)."""
    return export_plan(registry.get(loaded.family).build_plan(loaded, calib_data), precision, out)


def save_small_checkpoint(path: Path, mels: int = 128, vocab: int = 51866, seed: int = 0) -> Path:
    """A Whisper checkpoint directory with non-preset dimensions (no tokenizer files)."""
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

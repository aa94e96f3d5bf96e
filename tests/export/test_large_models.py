"""What the large sizes get without being built here: TensorRT profiles per size, the Jetson
workspace default, and the memory estimate that refuses a model before loading it."""

from __future__ import annotations

import pytest
import torch

from support.cli import fails_cleanly
from toolkit.core.errors import ToolkitError
from toolkit.core.memory import MEMORY_CAP_ENV, available_bytes, check_fits
from toolkit.export.tensorrt import DEFAULT_WORKSPACE_MB, default_workspace_mb
from toolkit.export.whisper.plan import build_graphs, model_config
from toolkit.models.whisper.loading import (
    PRESETS,
    GenerationSettings,
    LoadedWhisper,
    parameter_count,
    preset_config,
)
from toolkit.models.whisper.tokenizer import builtin_tokenizer


def _meta_model(preset: str) -> LoadedWhisper:
    """The architecture of ``preset`` with no weights (shapes only): cheap at any size."""
    from transformers import WhisperForConditionalGeneration

    cfg = preset_config(preset)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(cfg)
    return LoadedWhisper("whisper", model, {"preset": preset, "random_init": True},
                         tokenizer=builtin_tokenizer(cfg.vocab_size),
                         generation=GenerationSettings())


@pytest.mark.parametrize("preset,windows,rows", [("tiny", 8, 8), ("small", 8, 8),
                                                 ("medium", 4, 8), ("large-v2", 2, 5),
                                                 ("large-v3", 2, 5), ("large-v3-turbo", 2, 8)])
def test_trt_profiles_per_size(preset, windows, rows):
    loaded = _meta_model(preset)
    enc, dec = build_graphs(loaded)
    assert enc.profiles["input_features"].max[0] == windows
    assert dec.profiles["input_ids"].max == [rows, 448]
    assert dec.profiles["past_key_0"].max[0] == rows and dec.profiles["past_key_0"].max[2] == 447
    assert dec.profiles["cross_key_0"].max[0] == windows
    assert model_config(loaded)["batch_limits"] == {"windows": windows, "rows": rows}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_count_matches_the_architecture(preset):
    n = sum(p.numel() for p in _meta_model(preset).model.parameters())
    assert abs(parameter_count(preset=preset) - n) / n < 0.002


def test_workspace_default():
    gb = 1 << 30
    assert default_workspace_mb(3 * gb, jetson=False) == DEFAULT_WORKSPACE_MB
    # Orin NX 16 GB, ~14 GB free, large-v3 fp16 decoder (1.8 GB): the full 2 GiB
    assert default_workspace_mb(int(1.8 * gb), jetson=True, available=14 * gb) == 2048
    # Orin Nano 8 GB, ~6.5 GB free, medium fp16 encoder (0.6 GB): a quarter of what is left
    assert default_workspace_mb(int(0.6 * gb), jetson=True, available=int(6.5 * gb)) == 1280
    with pytest.raises(ToolkitError, match="needs about .* GB free on this Jetson"):
        default_workspace_mb(int(3.6 * gb), jetson=True, available=int(7.5 * gb))


def test_memory_cap(monkeypatch):
    monkeypatch.setenv(MEMORY_CAP_ENV, "1.5")
    assert available_bytes() == int(1.5e9)
    check_fits(int(1.4e9), "x", "fix")
    with pytest.raises(ToolkitError, match=r"x needs about 2\.0 GB of memory, but only 1\.5 GB "
                                           r"is TOOLKIT_MAX_MEMORY_GB=1\.5; fix"):
        check_fits(int(2e9), "x", "fix")
    for bad in ("lots", "inf", "-3", "0"):
        monkeypatch.setenv(MEMORY_CAP_ENV, bad)
        with pytest.raises(ToolkitError, match="is not a positive number of GB"):
            available_bytes()


def test_windows_per_batch_follows_the_profile():
    """large-v3's limits (2 windows, 5 rows): greedy decodes 2 windows at a time, beam 5 one;
    more rows than the profile are refused on the TensorRT backends, allowed on onnxruntime."""
    from types import SimpleNamespace

    from toolkit.runtime.whisper.pipeline import WhisperPipeline

    def pipe(backend):
        return SimpleNamespace(backend=backend, max_windows=2, max_rows=5)

    per = WhisperPipeline.windows_per_batch
    assert per(pipe("ort"), 1) == 2 and per(pipe("trt"), 5) == 1 and per(pipe("ort"), 8) == 1
    for backend in ("trt", "ort-trt"):
        with pytest.raises(ToolkitError, match="--best-of 8 decodes 8 rows per window, but this "
                                               "artifact's TensorRT profile allows 5"):
            per(pipe(backend), 8, "--best-of")


def test_internvl_export_memory_follows_its_measured_line():
    """InternVL's estimate (spec.FAMILY_EXPORT_MEMORY) covers the peaks measured on the 2B
    preset (results/internvl-2b-export.md) and stays within 16 GB, where the generic factors
    refused every 2B export on a 16 GB machine; other families keep the generic estimate."""
    from toolkit import registry
    from toolkit.export.spec import EXPORT_MEMORY_FACTOR, export_memory

    n = registry.get("internvl").count_parameters(None, "internvl2-2b")
    assert n == 2_205_754_368
    measured = {"fp32": 13.18e9, "fp16": 15.08e9, "int8": 13.82e9, "int8-cpu": 14.88e9,
                "int4": 14.70e9}
    for precision, peak in measured.items():
        assert peak < export_memory(n, precision, "internvl") <= 16e9, precision
        assert export_memory(n, precision, "whisper") > 16e9
    assert export_memory(n, "int8", "mystery") == int(1e9 + EXPORT_MEMORY_FACTOR["int8"] * 4 * n)


def test_internvl_2b_export_over_the_memory_cap_is_refused_before_loading(tmp_path):
    out = tmp_path / "2b"
    err = fails_cleanly("export", "internvl", "--preset", "internvl2-2b", "--out", out,
                        env={"TOOLKIT_MAX_MEMORY_GB": "2"},
                        contains="exporting internvl internvl2-2b at fp32 (2.21 B parameters) "
                                 "needs about 13.8 GB of memory")
    assert "TOOLKIT_MAX_MEMORY_GB=2" in err and not out.exists()

"""Shared fixtures. Tests mirror the package: tests/<layer>/… ; helpers live in tests/support
(the tiny-model zoo, the console-script runner and its ``fails_cleanly`` check)."""

import os
from pathlib import Path

import pytest

from toolkit import registry

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOOLKIT_SHARED_DATA") or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED} (set TOOLKIT_SHARED_DATA)")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Exports made on the fly (a model run on onnxruntime) go to a per-session cache, not ~."""
    old = os.environ.get("TOOLKIT_CACHE")
    os.environ["TOOLKIT_CACHE"] = str(tmp_path_factory.mktemp("toolkit-cache"))
    yield
    if old is None:
        os.environ.pop("TOOLKIT_CACHE", None)
    else:
        os.environ["TOOLKIT_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_en_artifact(tmp_path_factory):
    """The default model (OpenAI Whisper tiny.en, trained) exported as `toolkit export` does."""
    out = tmp_path_factory.mktemp("tiny-en") / "whisper-tiny.en-fp32"
    registry.get("whisper").export(out=out)
    return out


@pytest.fixture(scope="session")
def marian_artifact(tmp_path_factory):
    """The default Marian model (Firefox Translations tiny en→pt, trained) exported fp32."""
    out = tmp_path_factory.mktemp("marian") / "marian-en-pt-fp32"
    registry.get("marian").export(out=out)
    return out


@pytest.fixture(scope="session")
def en_pt_pairs(shared_data):
    from toolkit.models.marian.data import read_pairs

    return read_pairs(shared_data / "translation" / "en-pt.tsv")


@pytest.fixture(scope="session")
def internvl_tiny():
    """The internvl-tiny preset with its weights moved off the random init's near-uniform logits
    (seeded noise on every matrix), so greedy, beam and the references give varied tokens."""
    import torch

    from toolkit.models.internvl.loading import load_model

    loaded = load_model(preset="internvl-tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.ndim >= 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    loaded.source = {**loaded.source, "weights": loaded.source["weights"] + " + seeded noise"}
    return loaded


@pytest.fixture(scope="session")
def internvl_artifact(tmp_path_factory, internvl_tiny, shared_data):
    """``internvl_tiny`` exported fp32 (its plan called directly: the family is not registered)."""
    from toolkit.export.internvl.plan import build_plan
    from toolkit.export.onnx import export_plan

    out = tmp_path_factory.mktemp("internvl") / "internvl-tiny-fp32"
    export_plan(build_plan(internvl_tiny), "fp32", out)
    return out

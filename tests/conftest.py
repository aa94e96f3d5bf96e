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

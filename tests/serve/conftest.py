"""Fixtures of the serving tests: the default model exported once per session."""

import pytest

from toolkit import registry


@pytest.fixture(scope="session")
def tiny_en_artifact(tmp_path_factory):
    """The default model (OpenAI Whisper tiny.en, trained) exported as `toolkit export` does."""
    out = tmp_path_factory.mktemp("serve") / "whisper-tiny.en-fp32"
    registry.get("whisper").export(out=out)
    return out

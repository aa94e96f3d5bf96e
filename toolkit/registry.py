"""Model-family registry. The CLI and bench iterate over it; a family plugs in with one entry.

Each entry points at ``toolkit.models.<family>.family:FAMILY`` — a ``Family`` that wires that
family's folders in each layer (models/, export/, runtime/, bench/) together. Imports are lazy,
so ``toolkit doctor`` or a Whisper run never imports the video stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from .errors import ToolkitError

_FAMILIES = {
    "whisper": "toolkit.models.whisper.family",
    "gradtts": "toolkit.models.gradtts.family",
    "svt": "toolkit.models.svt.family",
}


@dataclass
class Family:
    """What the CLI needs from a model family.

    export(checkpoint, preset, precision, out, calib_data, opset, seed) -> manifest dict
    bench(**options) -> list of records (already printed and written by the family)
    """

    name: str
    description: str
    presets: tuple[str, ...]
    default_preset: str
    export: Callable[..., dict]
    bench: Callable[..., list]
    work_unit: str = ""           # what RTF / throughput is measured against
    default_model: str = ""       # what runs with no --checkpoint/--preset (if not default_preset)
    extra: dict = field(default_factory=dict)


def lazy(module: str, attr: str) -> Callable:
    """A function that imports ``module`` on first call (keeps `toolkit doctor` and one family's
    commands from importing every family's stack)."""

    def call(**kwargs):
        return getattr(importlib.import_module(module), attr)(**kwargs)

    call.__name__ = f"{module}.{attr}"
    return call


def names() -> list[str]:
    return list(_FAMILIES)


def get(name: str) -> Family:
    mod = _FAMILIES.get(name)
    if mod is None:
        raise ToolkitError(f"unknown model {name!r}; choose one of {', '.join(_FAMILIES)}")
    try:
        return importlib.import_module(mod).FAMILY
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("toolkit."):
            raise ToolkitError(f"model family {name!r} is not available in this build "
                               f"({exc.name} missing)") from None
        raise

"""Checking a JSON document someone could have edited (an artifact's manifest) before anything
runs on it: each field's type and range, one line naming the field and the fix."""

from __future__ import annotations

from typing import Any

from .errors import ToolkitError


def field(doc: dict, key: str, kind: type | tuple, where: str, low=None, high=None,
          choices=None, required: bool = True) -> Any:
    """``doc[key]`` if it is a ``kind`` within ``low``..``high`` (or one of ``choices``);
    otherwise one line naming ``where`` and the field."""
    if not isinstance(doc, dict):
        raise ToolkitError(f"{where} is not a JSON object; re-export the artifact")
    if key not in doc:
        if not required:
            return None
        raise ToolkitError(f"{where} has no {key!r}; it was edited or is from another tool — "
                           "re-export the artifact")
    value = doc[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ToolkitError(f"{where}: {key!r} is {value!r} ({type(value).__name__}), not "
                           f"{'an' if names[0] in 'aeiou' else 'a'} {names}; re-export the "
                           "artifact")
    if choices is not None and value not in choices:
        raise ToolkitError(f"{where}: {key!r} is {value!r}, not one of "
                           f"{', '.join(map(str, choices))}; re-export the artifact")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (low is not None and value < low) or (high is not None and value > high):
            raise ToolkitError(f"{where}: {key!r} is {value}, outside {low}..{high}; re-export "
                               "the artifact")
    return value


def int_list(doc: dict, key: str, where: str, high: int) -> list[int]:
    values = field(doc, key, list, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < high
               for v in values):
        raise ToolkitError(f"{where}: {key!r} must list token ids from 0 to {high - 1}; "
                           "re-export the artifact")
    return values

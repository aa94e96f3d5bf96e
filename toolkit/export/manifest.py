"""manifest.json: the description shipped beside every artifact's graphs.

A runtime refuses an artifact whose manifest is missing, corrupt, for another model family,
or whose graph files do not match their recorded hashes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ToolkitError
from ..core.files import sha256_file

MANIFEST = "manifest.json"
FORMAT = "toolkit-artifact/1"


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST
    manifest = {"format": FORMAT, **manifest}
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def load_manifest(directory: str | Path, family: str | None = None,
                  verify_hashes: bool = True) -> dict:
    """Read and check an artifact's manifest; raises ToolkitError with the fix on any mismatch."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ToolkitError(f"artifact directory {directory} does not exist; create one with "
                           "`toolkit export <model> --out DIR`")
    path = directory / MANIFEST
    if not path.is_file():
        raise ToolkitError(f"{directory} has no {MANIFEST}; it is not a toolkit artifact — "
                           "re-export it with `toolkit export`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
                           "re-export the artifact") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ToolkitError(f"{path} is not a {FORMAT} manifest (format="
                           f"{manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                           "re-export the artifact with this toolkit version")
    if family is not None and manifest.get("family") != family:
        raise ToolkitError(f"artifact {directory} holds a {manifest.get('family')!r} model, not "
                           f"{family!r}; point --artifact at a {family} export")
    for name, g in (manifest.get("graphs") or {}).items():
        f = directory / g.get("file", "")
        if not f.is_file():
            raise ToolkitError(f"artifact {directory} is missing graph file {g.get('file')!r} "
                               f"named in its manifest; re-export it")
        if verify_hashes and g.get("sha256") and sha256_file(f) != g["sha256"]:
            raise ToolkitError(f"graph file {f.name} does not match the sha256 in {MANIFEST} "
                               "(modified or corrupt); re-export the artifact")
    if not manifest.get("graphs"):
        raise ToolkitError(f"{path} lists no graphs; re-export the artifact")
    return manifest

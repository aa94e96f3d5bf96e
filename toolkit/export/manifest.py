"""manifest.json: the description shipped beside every artifact's graphs.

A runtime refuses an artifact whose manifest is missing, corrupt, for another model family,
or whose graph files do not match their recorded hashes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..core.errors import ToolkitError
from ..core.files import sha256_file
from ..core.precisions import EXPORT_PRECISIONS
from ..core.schema import field
from .external import check_locations

MANIFEST = "manifest.json"
FORMAT = "toolkit-artifact/1"


# engine and timing caches onnxruntime's TensorRT EP writes into an artifact it runs
_EP_CACHE_SUFFIXES = (".engine", ".profile", ".timing", ".cache")


def is_artifact(directory: str | Path) -> bool:
    """Whether ``directory`` is a toolkit artifact and nothing else — every entry is the
    manifest, a file it names, or an engine cache — so an export may replace it whole."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return False
    known = {MANIFEST}
    for g in (manifest.get("graphs") or {}).values():
        if isinstance(g, dict):
            known.add(str(g.get("file")))
            known.update(str(d.get("file")) for d in g.get("data_files") or []
                         if isinstance(d, dict))
            known.update(str(e.get("file")) for e in g.get("engines") or [] if isinstance(e, dict))
    known.update(str(name).split("/")[0] for name in manifest.get("extra_files") or [])
    return all(p.name in known or p.name.endswith(_EP_CACHE_SUFFIXES)
               for p in directory.iterdir())


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST
    manifest = {"format": FORMAT, **manifest}
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def inside(directory: Path, name, what: str, bare: bool = True) -> Path:
    """``directory / name`` for a name a manifest lists, refusing anything that could point
    outside the artifact: absolute paths, ``..``, and (``bare``) any sub-directory."""
    parts = str(name).rstrip("/").split("/") if isinstance(name, str) else []
    ok = bool(parts) and all(_BARE.fullmatch(p) for p in parts) and (len(parts) == 1 or not bare)
    if not ok:
        raise ToolkitError(f"the manifest of {directory} names {what} {name!r}, which is not a "
                           "plain file name inside the artifact; refusing it — re-export the "
                           "artifact")
    path = directory.joinpath(*parts)
    _no_links(directory, parts, name, what)
    return path


def _no_links(directory: Path, parts: list[str], name, what: str) -> None:
    """Every component below ``directory`` is a real entry, not a symbolic link: a link could
    hand another artifact's graph — or ``/etc/passwd`` — to the runtime under a listed name."""
    here = directory
    for part in parts:
        here = here / part
        if here.is_symlink():
            raise ToolkitError(f"{what} {name!r} in {directory} is a symbolic link (to "
                               f"{os.readlink(here)}); an artifact holds its own files only — "
                               "copy the real file in, or re-export the artifact")
    real = here.resolve()
    if here.exists() and not real.is_relative_to(directory.resolve()):
        raise ToolkitError(f"{what} {name!r} resolves to {real}, outside {directory}; refusing "
                           "it — re-export the artifact")


def _check_hash(directory: Path, f: Path, want, what: str, verify: bool) -> None:
    if not isinstance(want, str) or len(want) != 64:
        raise ToolkitError(f"the manifest of {directory} records no sha256 for {what} {f.name}; "
                           "re-export the artifact")
    if verify and sha256_file(f) != want:
        raise ToolkitError(f"{what} {f.name} does not match the sha256 in {MANIFEST} (modified "
                           "or corrupt); re-export the artifact")


def _check_data_files(directory: Path, graph: str, f: Path, listed, verify: bool) -> None:
    """A graph's external data files: each listed one present, of its recorded size and hash,
    and the graph reading weights from those files only (never a path outside the artifact)."""
    if not isinstance(listed, list):
        raise ToolkitError(f"the manifest of {directory} describes the data files of graph "
                           f"{graph} wrongly; re-export the artifact")
    sizes: dict[str, int] = {}
    for d in listed:
        name = d.get("file") if isinstance(d, dict) else None
        path = inside(directory, name, "data file")
        if not path.is_file():
            raise ToolkitError(f"artifact {directory} is missing data file {name!r} of graph "
                               f"{graph} (its weights); copy the whole artifact directory, or "
                               "re-export it")
        size = path.stat().st_size
        if size != d.get("bytes"):
            raise ToolkitError(f"data file {name} of {directory} has {size} bytes, its manifest "
                               f"records {d.get('bytes')}; it is truncated or swapped — copy the "
                               "artifact again or re-export it")
        _check_hash(directory, path, d.get("sha256"), "data file", verify)
        sizes[name] = size
    check_locations(f, sizes)


def load_manifest(directory: str | Path, family: str | None = None,
                  verify_hashes: bool = True) -> dict:
    """Read and check an artifact's manifest; raises ToolkitError with the fix on any mismatch."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ToolkitError(f"artifact directory {directory} does not exist; create one with "
                           "`toolkit export <model> --out DIR`")
    path = directory / MANIFEST
    if path.is_symlink():
        raise ToolkitError(f"{path} is a symbolic link; an artifact holds its own files only — "
                           "copy the real manifest in, or re-export the artifact")
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
    where = f"the manifest of {directory}"
    fam = field(manifest, "family", str, where)
    field(manifest, "precision", str, where, choices=EXPORT_PRECISIONS)
    field(manifest, "export_revision", int, where, 1, 10_000, required=False)
    field(manifest, "model_config", dict, where, required=False)
    field(manifest, "source", dict, where, required=False)
    if family is not None and fam != family:
        raise ToolkitError(f"artifact {directory} holds a {manifest.get('family')!r} model, not "
                           f"{family!r}; point --artifact at a {family} export")
    _check_graphs(directory, path, manifest.get("graphs"), verify_hashes)
    _check_extra_files(directory, path, manifest.get("extra_files") or {}, verify_hashes)
    return manifest


def _check_graphs(directory: Path, path: Path, graphs, verify_hashes: bool) -> None:
    """Each graph file (and its data files and engines) a plain name inside, of its hash."""
    if not isinstance(graphs, dict) or not graphs:
        raise ToolkitError(f"{path} lists no graphs; re-export the artifact")
    for name, g in graphs.items():
        inside(directory, name, "graph")  # graph names become engine file names
        if not isinstance(g, dict):
            raise ToolkitError(f"{path}: graph {name!r} is not described; re-export the artifact")
        f = inside(directory, g.get("file"), "graph file")
        if not f.is_file():
            raise ToolkitError(f"artifact {directory} is missing graph file {g.get('file')!r} "
                               f"named in its manifest; re-export it")
        _check_hash(directory, f, g.get("sha256"), "graph file", verify_hashes)
        _check_data_files(directory, name, f, g.get("data_files") or [], verify_hashes)
        for e in g.get("engines") or []:
            if isinstance(e, dict) and "file" in e:
                inside(directory, e["file"], "engine file")


def _check_extra_files(directory: Path, path: Path, extra, verify_hashes: bool) -> None:
    """The extra files (the tokenizer): listed with hashes; a folder holds nothing else."""
    if not isinstance(extra, dict):
        raise ToolkitError(f"{path} lists extra files without their sha256 (an older export); "
                           "re-export the artifact")
    folders: dict[Path, set] = {}
    for name, want in extra.items():
        f = inside(directory, name, "file", bare=False)
        if not f.is_file():
            raise ToolkitError(f"artifact {directory} is missing {name!r} named in its manifest; "
                               "re-export it")
        _check_hash(directory, f, want, "file", verify_hashes)
        if f.parent != directory:
            folders.setdefault(f.parent, set()).add(f.name)
    for folder, listed in folders.items():  # a folder is read whole (the tokenizer): no extras
        unlisted = sorted(p.name for p in folder.iterdir() if p.name not in listed)
        if unlisted:
            raise ToolkitError(f"{folder} holds files its manifest does not list ({unlisted[:3]}); "
                               "refusing them — re-export the artifact")

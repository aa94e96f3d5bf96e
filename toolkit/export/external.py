"""ONNX graphs whose weights live beside them: one external data file per graph.

Protobuf cannot serialise a message over 2 GiB, so a graph with more weight than that (the
large-v3 encoder at fp32 holds ~3.0 GB, its decoder ~3.5 GB) keeps its initializers in a data
file. The toolkit writes exactly one per graph, ``<graph>.onnx.data``, next to ``<graph>.onnx``:

- one file per graph keeps an artifact to two files per graph that the manifest lists and
  hashes (per-tensor files would be ~500 names for large-v3, each opened and hashed);
- onnxruntime and TensorRT's ONNX parser resolve a location relative to the graph file, so a
  bare file name inside the artifact is all either needs (``parse_from_file``, a session on the
  path);
- tensors start on 4 KiB boundaries, so a runtime may map them instead of copying.

Every step here streams one tensor at a time: PyTorch's exporter writes one file per tensor for
a graph over 2 GiB, and ``consolidate`` moves them into the single data file without ever
holding more than one tensor in memory.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import _get_all_tensors, _get_attribute_tensors

from ..core.errors import ToolkitError

# Graphs whose initializers total at least this many bytes keep them in an external data file.
# Well under protobuf's 2 GiB ceiling: the graph's structure, and the nodes that calibration
# and range probes add, must still fit beside the weights. The large-v3 encoder's fp16 graph
# (1.48 GB) stays one file; its fp32 graph and the large decoder's fp16 graph go external.
DEFAULT_THRESHOLD = 1536 << 20
# Above this, a graph goes external whatever threshold was asked for (protobuf's 2 GiB limit,
# less room for the graph itself).
MAX_INLINE = 1900 << 20
DATA_SUFFIX = ".data"
ALIGN = 4096
_INLINE_BELOW = 1024  # tensors smaller than this stay in the graph file (shapes, scales)


def data_name(graph: Path) -> str:
    return graph.name + DATA_SUFFIX


def _external(t) -> dict[str, str] | None:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in t.external_data}


def _tensor_bytes(t) -> int:
    ext = _external(t)
    if ext is not None and "length" in ext:
        return int(ext["length"])
    if ext is None and t.raw_data:
        return len(t.raw_data)
    # typed fields, or an external tensor written without its length (PyTorch's per-tensor
    # files): the size its shape and type give
    n = int(np.prod(t.dims)) if len(t.dims) else 1
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _tensors(model):
    """Every tensor of the model: initializers (subgraphs' too), then tensors in node
    attributes (Constant values) — what runtimes load external data for."""
    return _get_all_tensors(model)


def tensor_bytes(t) -> int:
    """Bytes of one tensor's data, inline or external (no data is read)."""
    return _tensor_bytes(t)


def weight_bytes(model) -> int:
    """Bytes of weights a graph holds, inline or external (no data is read)."""
    return sum(_tensor_bytes(t) for t in _tensors(model))


def locations(path: str | Path) -> set[str]:
    """The external data files a graph file refers to (no data is read)."""
    model = onnx.load(str(path), load_external_data=False)
    return {(_external(t) or {}).get("location", "") for t in _tensors(model)
            if _external(t) is not None}


@contextlib.contextmanager
def linked(path: str | Path, where: str | Path):
    """The graph at ``path`` loaded without its external weights, each external tensor
    re-pointed to a hard link of its data file inside ``where`` (a copy where links cannot be
    made). A graph assembled there from this one and a graph of ``where`` resolves every weight
    from disk, so nothing large is held in Python — the int8 layer search puts float weights of
    the fp32 graph beside a QDQ graph that way (the InternVL2-2B decoder: 6.8 GB each time).
    The links are removed on exit."""
    path, where = Path(path), Path(where)
    model = onnx.load(str(path), load_external_data=False)
    names: dict[str, str] = {}
    try:
        for t in _tensors(model):
            ext = _external(t)
            if ext is None:
                continue
            loc = ext["location"]
            if loc not in names:
                if path.parent.resolve() == where.resolve():
                    names[loc] = loc
                else:
                    names[loc] = f"{path.stem}.linked-{os.getpid()}-{len(names)}{DATA_SUFFIX}"
                    target, link = path.parent / loc, where / names[loc]
                    link.unlink(missing_ok=True)
                    try:
                        os.link(target, link)
                    except OSError:  # another file system
                        shutil.copyfile(target, link)
            for e in t.external_data:
                if e.key == "location":
                    e.value = names[loc]
        yield model
    finally:
        for loc, name in names.items():
            if name != loc:
                (where / name).unlink(missing_ok=True)


def _raw(t, base: Path) -> bytes:
    """A tensor's bytes in ONNX's raw little-endian layout, wherever they are."""
    ext = _external(t)
    if ext is not None:
        src = base / ext["location"]
        with open(src, "rb") as f:
            f.seek(int(ext.get("offset", 0)))
            length = ext.get("length")
            data = f.read(int(length)) if length is not None else f.read()
        return data
    if t.raw_data:
        return t.raw_data
    return numpy_helper.to_array(t).tobytes()


def _set_external(t, location: str, offset: int, length: int) -> None:
    for field in ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                  "uint64_data", "raw_data"):
        t.ClearField(field)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v


def _set_inline(t, data: bytes) -> None:
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT
    for field in ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                  "uint64_data"):
        t.ClearField(field)
    t.raw_data = data


def _write_split(model, path: Path, base: Path, threshold: int, data: Path) -> list[Path]:
    """Write ``model`` to ``path``: inline if its weights are under ``threshold``, else with its
    tensors in ``data`` (a file beside ``path``, which the graph names). Tensor bytes are read
    from ``base`` (for external ones), one at a time. Returns the external files the model
    referred to before, other than ``data`` (the caller may remove them)."""
    old = sorted({base / ext["location"] for t in _tensors(model)
                  if (ext := _external(t)) is not None})
    # (a write that runs out of room is named by the export's atomic directory: --out)
    if weight_bytes(model) < min(threshold, MAX_INLINE):
        for t in _tensors(model):
            if _external(t) is not None:
                _set_inline(t, _raw(t, base))
        onnx.save(model, str(path))
        data.unlink(missing_ok=True)
        return [p for p in old if p != data]
    part = data.with_name(data.name + ".part")
    offset = 0
    for t in _get_attribute_tensors(model):  # attribute tensors stay inline (TensorRT's parser)
        if _external(t) is not None:
            _set_inline(t, _raw(t, base))
    with open(part, "wb") as f:
        for t in model.graph.initializer:
            size = _tensor_bytes(t)
            if size < _INLINE_BELOW:
                if _external(t) is not None:
                    _set_inline(t, _raw(t, base))
                continue
            raw = _raw(t, base)
            pad = (-offset) % ALIGN
            f.write(b"\0" * pad)
            f.write(raw)
            _set_external(t, data.name, offset + pad, len(raw))
            offset += pad + len(raw)
            del raw
    onnx.save(model, str(path))
    os.replace(part, data)
    return [p for p in old if p != data]


def consolidate(path: str | Path, threshold: int = DEFAULT_THRESHOLD) -> None:
    """Rewrite the graph at ``path`` in the toolkit's layout (see the module text): whatever
    external files it refers to (PyTorch's per-tensor files, a quantizer's data file) become one
    ``<name>.data`` beside it — or, under ``threshold``, the graph holds its weights inline.
    Streams one tensor at a time; the old data files are removed afterwards."""
    path = Path(path)
    if path.stat().st_size < min(threshold, MAX_INLINE) and not _may_refer_outside(path):
        # already in the layout: an inline graph under the threshold (what PyTorch writes for
        # a graph under 2 GiB). Parsing and rewriting it would hold it twice more beside the
        # PyTorch model for the same bytes — the peak of a 1B model's export.
        return
    model = onnx.load(str(path), load_external_data=False)
    tmp = path.with_name(path.stem + ".consolidating.onnx")
    old = _write_split(model, tmp, path.parent, threshold, path.with_name(data_name(path)))
    del model
    os.replace(tmp, path)
    for p in old:  # only files beside the graph (its own work files) are ever removed
        if p.parent.resolve() == path.parent.resolve():
            p.unlink(missing_ok=True)


def save(model, path: str | Path, threshold: int = DEFAULT_THRESHOLD,
         base: str | Path | None = None) -> None:
    """Save an in-memory graph in the toolkit's layout. Tensors still external are read from
    ``base`` (default: ``path``'s folder). The weights are moved out of ``model`` as they are
    written (it is spent afterwards), so a large graph is never held twice."""
    path = Path(path)
    _write_split(model, path, Path(base) if base else path.parent, threshold,
                 path.with_name(data_name(path)))


def move(src: Path, dst: Path) -> None:
    """Move a graph file and its data file (same base name) to ``dst``."""
    data = src.with_name(data_name(src))
    if data.exists():
        if dst.name != src.name:
            raise ToolkitError(f"internal: a graph with external data cannot be renamed "
                               f"({src.name} → {dst.name})")
        shutil.move(str(data), dst.with_name(data_name(dst)))
    shutil.move(str(src), dst)


def data_files(path: Path) -> list[Path]:
    """The data file of the graph at ``path``, if it has one."""
    data = path.with_name(data_name(path))
    return [data] if data.exists() else []


_LOCATION_KEY = b"\n\x08location"  # how a serialised external-data entry's key starts


def _may_refer_outside(path: Path) -> bool:
    """Whether the graph file can hold an external-data reference at all: a serialised one
    carries the key "location" (a byte scan of a read-only mapping, cheap beside parsing a
    large inline graph)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(_LOCATION_KEY) >= 0


def check_locations(path: Path, allowed: dict[str, int]) -> None:
    """Refuse a graph whose external data lies anywhere but the files ``allowed`` lists
    ({bare name: size}), or past the end of one of them (a truncated or swapped file)."""
    if not _may_refer_outside(path):
        return
    model = onnx.load(str(path), load_external_data=False)
    function_tensors = [a.t for f in model.functions for n in f.node for a in n.attribute
                        if a.type == onnx.AttributeProto.TENSOR]
    if len(model.graph.sparse_initializer) or any(_external(t) is not None
                                                  for t in function_tensors):
        raise ToolkitError(f"graph {path.name} holds sparse or external function tensors, which "
                           "no toolkit export writes; refusing it — re-export the artifact")
    for t in _tensors(model):
        ext = _external(t)
        if ext is None:
            continue
        loc = ext.get("location", "")
        if loc not in allowed:
            raise ToolkitError(f"graph {path.name} reads weights from {loc!r}, which its "
                               f"manifest does not list as a data file of the artifact; "
                               "refusing it — re-export the artifact")
        end = int(ext.get("offset", 0)) + int(ext.get("length", 0))
        if end > allowed[loc]:
            raise ToolkitError(f"data file {loc} of {path.parent} is shorter than graph "
                               f"{path.name} needs ({allowed[loc]} bytes, tensor {t.name} ends at "
                               f"{end}); it is truncated or swapped — re-export the artifact")

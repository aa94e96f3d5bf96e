"""Readers for Marian's files, written with NumPy from the Marian / browsermt sources (no code of
Marian or of the package that ships the models runs here).

* ``model.<pair>.intgemm.alphas.bin`` — Marian's binary model format (``read_binary``,
  ``dequantised``): a version word, a table of headers, the names, the shapes, padding, then
  every tensor's bytes (each padded to 256 bytes). int8 matrices (type ``intgemm8``) are stored
  transposed — except the embedding ``Wemb`` — and followed by one float, the quantisation
  multiplier: ``value = int8 / multiplier``. ``<name>_QuantMultA`` tensors hold the activation
  multipliers the int8 engine uses (``int8shiftAlphaAll``). ``special:model.yml`` is the
  training configuration as YAML text.
* ``lex.<first>.<best>.<pair>.s2t.bin`` — the binary lexical shortlist (``read_shortlist``).

Docs: docs/marian.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import ToolkitError

BINARY_FILE_VERSION = 1
# Marian's element types (src/common/types.h): a class bit ORed with the element size.
_SIGNED, _UNSIGNED, _FLOAT, _INTGEMM = 0x0100, 0x0200, 0x0400, 0x4000
TYPES = {
    _SIGNED + 1: np.int8, _SIGNED + 2: np.int16, _SIGNED + 4: np.int32, _SIGNED + 8: np.int64,
    _UNSIGNED + 1: np.uint8, _UNSIGNED + 2: np.uint16, _UNSIGNED + 4: np.uint32,
    _UNSIGNED + 8: np.uint64,
    _FLOAT + 2: np.float16, _FLOAT + 4: np.float32, _FLOAT + 8: np.float64,
    _INTGEMM + _SIGNED + 1: np.int8,    # intgemm8: int8 matrix (transposed) + float multiplier
    _INTGEMM + _SIGNED + 2: np.int16,   # intgemm16
}
INTGEMM8, INTGEMM16 = _INTGEMM + _SIGNED + 1, _INTGEMM + _SIGNED + 2
CONFIG_NAME = "special:model.yml"


@dataclass
class Item:
    """One tensor of a Marian binary file, as stored."""

    name: str
    type: int
    shape: tuple[int, ...]
    data: bytes = field(repr=False)

    @property
    def quantised(self) -> bool:
        return self.type in (INTGEMM8, INTGEMM16)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def array(self) -> np.ndarray:
        """The stored elements in the stored layout (int8 of a quantised matrix as written:
        transposed unless it is the embedding)."""
        dtype = np.dtype(TYPES[self.type]).newbyteorder("<")
        n = self.elements
        if len(self.data) < n * dtype.itemsize:
            raise ToolkitError(f"tensor {self.name} holds {len(self.data)} bytes, fewer than its "
                               f"shape {self.shape} needs; the model file is truncated or corrupt")
        return np.frombuffer(self.data, dtype=dtype, count=n)

    def multiplier(self) -> float:
        """The float stored after a quantised matrix (``value = integer / multiplier``)."""
        if not self.quantised:
            raise ValueError(f"{self.name} is not quantised")
        at = self.elements * np.dtype(TYPES[self.type]).itemsize
        if len(self.data) < at + 4:
            raise ToolkitError(f"quantised tensor {self.name} has no multiplier after its "
                               "values; the model file is truncated or corrupt")
        return struct.unpack_from("<f", self.data, at)[0]


def read_binary(path: str | Path) -> dict[str, Item]:
    """Every item of a Marian binary model file, by name, in file order."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ToolkitError(f"cannot read Marian model {path}: {exc.strerror or exc}") from None
    return parse_binary(blob, str(path))


def parse_binary(blob: bytes, where: str = "the model") -> dict[str, Item]:
    bad = f"{where} is not a Marian binary model (.bin) or is truncated"
    try:
        version, count = struct.unpack_from("<QQ", blob, 0)
        if version != BINARY_FILE_VERSION:
            raise ToolkitError(f"{where} has Marian binary version {version}, expected "
                               f"{BINARY_FILE_VERSION}; it is not a Marian .bin model")
        if count > 100_000:
            raise ToolkitError(bad)
        off = 16
        headers = np.frombuffer(blob, dtype="<u8", count=4 * count, offset=off).reshape(count, 4)
        off += 32 * count
        names = []
        for name_len in headers[:, 0]:
            raw = blob[off:off + int(name_len)]
            if len(raw) != name_len or not raw.endswith(b"\0"):
                raise ToolkitError(bad)
            names.append(raw[:-1].decode("utf-8"))
            off += int(name_len)
        shapes = []
        for shape_len in headers[:, 2]:
            shapes.append(tuple(int(x) for x in np.frombuffer(blob, dtype="<i4",
                                                               count=int(shape_len), offset=off)))
            off += 4 * int(shape_len)
        (padding,) = struct.unpack_from("<Q", blob, off)
        off += 8 + padding
        items = {}
        for name, (_n, kind, _s, data_len), shape in zip(names, headers, shapes):
            end = off + int(data_len)
            if end > len(blob) or int(kind) not in TYPES:
                raise ToolkitError(bad if end > len(blob) else
                                   f"{where}: tensor {name} has unknown Marian type "
                                   f"{int(kind):#x}")
            items[name] = Item(name, int(kind), shape, blob[off:end])
            off = end
    except (struct.error, ValueError, UnicodeDecodeError):
        raise ToolkitError(bad) from None
    return items


def write_binary(items: dict[str, Item]) -> bytes:
    """The inverse of ``parse_binary`` (tests write round trips and corrupt copies with it)."""
    items = list(items.values())
    names = [it.name.encode() + b"\0" for it in items]
    out = [struct.pack("<QQ", BINARY_FILE_VERSION, len(items))]
    for name, it in zip(names, items):
        out.append(struct.pack("<QQQQ", len(name), it.type, len(it.shape), len(it.data)))
    out += names
    out += [np.asarray(it.shape, dtype="<i4").tobytes() for it in items]
    head = sum(len(b) for b in out) + 8
    padding = (-head) % 256
    out.append(struct.pack("<Q", padding) + b"\0" * padding)
    out += [it.data for it in items]
    return b"".join(out)


def model_config(items: dict[str, Item]) -> dict:
    """The training configuration Marian stores in the model (``special:model.yml``)."""
    import yaml

    item = items.get(CONFIG_NAME)
    if item is None:
        raise ToolkitError("the Marian model has no special:model.yml (its configuration); "
                           "export it again with a Marian that stores it")
    text = item.data.rstrip(b"\0").decode("utf-8")
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ToolkitError("the Marian model's special:model.yml is not a YAML mapping")
    return config


def dequantised(item: Item) -> np.ndarray:
    """A tensor as float32 in Marian's logical layout (``shape`` as stored in the header):
    int8 matrices are divided by their multiplier and — except the embedding — transposed
    back (intgemm stores the B operand of ``x @ W`` column-major)."""
    values = item.array()
    if not item.quantised:
        return values.astype(np.float32).reshape(item.shape)
    scale = 1.0 / item.multiplier()
    if "Wemb" in item.name or len(item.shape) != 2:
        return (values.astype(np.float32) * scale).reshape(item.shape)
    rows, cols = item.shape
    return np.ascontiguousarray((values.astype(np.float32) * scale).reshape(cols, rows).T)


def weights(items: dict[str, Item]) -> dict[str, np.ndarray]:
    """Every parameter as float32 (activation multipliers and the config left out)."""
    return {name: dequantised(it) for name, it in items.items()
            if name != CONFIG_NAME and not name.endswith("_QuantMultA")}


def activation_multipliers(items: dict[str, Item]) -> dict[str, float]:
    """``{matrix name: activation multiplier}`` from the ``<name>_QuantMultA`` items (the int8
    engine quantises a matmul's input as ``round(x * multiplier)``)."""
    out = {}
    for name, it in items.items():
        if name.endswith("_QuantMultA"):
            # one float — quantised itself for Wemb (int8 127 and its multiplier), so decoded
            # the same way as any tensor
            out[name[:-len("_QuantMultA")]] = float(dequantised(it).ravel()[0])
    return out


# --- lexical shortlist -------------------------------------------------------------------

SHORTLIST_MAGIC = 0xF11A48D5013417F5
_MASK64 = (1 << 64) - 1


@dataclass
class Shortlist:
    """Marian's binary lexical shortlist: for each source token id, the sorted target ids that
    may follow it (``offsets[s]:offsets[s+1]`` into ``targets``); decoding with it allows the
    ``first`` most frequent target ids plus the lists of every source token of the batch."""

    first: int
    best: int
    offsets: np.ndarray      # uint64 [source vocab + 1]
    targets: np.ndarray      # uint32

    def targets_of(self, source_id: int) -> np.ndarray:
        return self.targets[int(self.offsets[source_id]):int(self.offsets[source_id + 1])]

    def allowed(self, source_ids, target_vocab: int, multiple: int = 8) -> np.ndarray:
        """The sorted target ids a batch with these source ids may produce: the ``first``
        most frequent, every source token's list, then more frequent ids until the count is a
        multiple of ``multiple`` (Marian pads to 8 for its int8 kernels)."""
        keep = np.zeros(target_vocab, dtype=bool)
        keep[:min(self.first, target_vocab)] = True
        for s in np.unique(np.asarray(source_ids, dtype=np.int64).ravel()):
            if 0 <= s < len(self.offsets) - 1:
                keep[self.targets_of(int(s))] = True
        missing = (-int(keep.sum())) % multiple
        if missing:
            free = np.flatnonzero(~keep[self.first:])[:missing] + self.first
            keep[free] = True
        return np.flatnonzero(keep)


def shortlist_checksum(blob: bytes) -> int:
    """Marian's checksum of a shortlist: boost-style hash_combine over the 64-bit words after
    the magic and the checksum (std::hash of an integer is the integer)."""
    words = np.frombuffer(blob, dtype="<u8", count=(len(blob) - 16) // 8, offset=16).tolist()
    seed = 0
    for v in words:
        seed ^= (v + 0x9E3779B9 + ((seed << 6) & _MASK64) + (seed >> 2)) & _MASK64
    return seed


def read_shortlist(path: str | Path, check: bool = True, source_vocab: int | None = None,
                   target_vocab: int | None = None) -> Shortlist:
    """Read ``lex.*.s2t.bin``: every offset and id must be in range; ``check`` also verifies
    the checksum (as Marian does)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ToolkitError(f"cannot read shortlist {path}: {exc.strerror or exc}") from None
    bad = f"{path} is not a Marian binary shortlist (lex.*.s2t.bin)"
    if len(blob) < 48:
        raise ToolkitError(bad + " (too short)")
    magic, checksum, first, best, n_offsets, n_targets = struct.unpack_from("<6Q", blob, 0)
    if magic != SHORTLIST_MAGIC:
        raise ToolkitError(bad + " (wrong magic number)")
    expected = 48 + 8 * n_offsets + 4 * n_targets
    if expected != len(blob):
        raise ToolkitError(f"{path}: the shortlist header says {expected} bytes but the file "
                           f"has {len(blob)}; it is truncated or corrupt")
    if check and shortlist_checksum(blob) != checksum:
        raise ToolkitError(f"{path}: shortlist checksum mismatch; the file is corrupt — "
                           "reinstall the package it came from")
    offsets = np.frombuffer(blob, dtype="<u8", count=n_offsets, offset=48)
    targets = np.frombuffer(blob, dtype="<u4", count=n_targets, offset=48 + 8 * n_offsets)
    # the ranges are checked always (vectorised: a few ms); the checksum only with ``check``
    # (a Python loop over the file: 0.4 s — an artifact's manifest hashes the file instead)
    if (n_offsets == 0 or offsets[0] != 0 or offsets[-1] != n_targets
            or np.any(np.diff(offsets.astype(np.int64)) < 0)):
        raise ToolkitError(f"{path}: shortlist offsets are out of order or out of range; "
                           "the file is corrupt")
    if source_vocab is not None and n_offsets - 1 > source_vocab:
        raise ToolkitError(f"{path}: the shortlist covers {n_offsets - 1} source ids but "
                           f"the vocabulary has {source_vocab}; it belongs to another model")
    if target_vocab is not None and n_targets and int(targets.max()) >= target_vocab:
        raise ToolkitError(f"{path}: the shortlist names target id {int(targets.max())} "
                           f"but the vocabulary has {target_vocab}; it belongs to another "
                           "model")
    return Shortlist(int(first), int(best), offsets, targets)

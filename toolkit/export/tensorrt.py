"""TensorRT 10 engines from an exported artifact (``toolkit build``, ``toolkit export --trt``).

For every graph in the artifact's manifest:

- parse the ONNX file with ``trt.OnnxParser`` (every parser error is reported with its node
  name and op type);
- one optimization profile per graph from the manifest's ``trt_profiles`` (min/opt/max per
  dynamic input), with user overrides ``--profile AXIS=min:opt:max`` (a named dynamic axis,
  e.g. ``tokens=1:64:448``, applied to every input that has that axis) or
  ``--profile INPUT=1x80x100:1x80x3000:1x80x3000`` (the whole shape of one input);
- fp16: ``BuilderFlag.FP16`` with LayerNorm/Softmax layers and the layers feeding them pinned to
  fp32 (``layer.precision`` + ``set_output_type`` + ``OBEY_PRECISION_CONSTRAINTS``); building
  from an fp16 artifact additionally keeps every layer the ONNX export left in fp32;
- int8: only from a QDQ graph (explicit quantization, ``BuilderFlag.INT8``); the implicit
  calibrators (deprecated in TensorRT 10) are never used;
- a timing cache reused across builds (per GPU + TensorRT version unless ``--timing-cache``);
- an engine cache keyed by GPU name + compute capability, TensorRT version, precision, profile
  and graph hash: a build whose key matches an existing engine is skipped;
- the engine is written atomically next to its graph, and the manifest's ``engines`` list for
  that graph records the key, build time, size and the equivalent ``trtexec`` command line.

``tensorrt`` is imported lazily; without it ``require_tensorrt`` raises a one-line
MissingDependency that prints the ``trtexec`` commands to run on the target instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

from ..core import hardware
from ..core.errors import MissingDependency, ToolkitError
from ..core.files import (
    atomic_dir,
    atomic_write_bytes,
    check_replaceable,
    check_writable,
    locked,
    sha256_file,
)
from ..core.memory import available_bytes
from ..core.progress import Steps, console
from .manifest import MANIFEST, is_artifact, load_manifest

MIN_TRT_MAJOR = 10
NEW_OUT_HINT = "choose a new or empty --out directory"
DEFAULT_WORKSPACE_MB = 2048   # discrete GPUs (dedicated memory)
MIN_WORKSPACE_MB = 256


def default_workspace_mb(weight_bytes: int, jetson: bool | None = None,
                         available: int | None = None) -> int:
    """The builder's workspace when ``--workspace`` is not given.

    Discrete GPU: 2048 MiB. Jetson: the GPU shares the board's memory with the CPU and the OS,
    and the builder holds the graph's weights (and the engine it is making) beside its
    workspace — a fixed 2 GiB plus large-v3's 3 GB of fp16 weights does not fit an 8 GB Orin.
    So: a quarter of the memory left free after twice the weights, in 256 MiB steps, between
    256 and 2048 MiB (Orin NX 16 GB, large-v3 fp16 decoder: ~2048; Orin Nano 8 GB, medium:
    ~1024). Refuses, in one line, a graph that leaves less than the minimum."""
    jetson = hardware.is_jetson() if jetson is None else jetson
    if not jetson:
        return DEFAULT_WORKSPACE_MB
    available = available_bytes() if available is None else available
    if available is None:
        return DEFAULT_WORKSPACE_MB
    left_mb = (available - 2 * weight_bytes) // (1 << 20)
    mb = min(DEFAULT_WORKSPACE_MB, (left_mb // 4) // 256 * 256)
    if mb < MIN_WORKSPACE_MB:
        raise ToolkitError(f"building an engine for {weight_bytes / 1e9:.1f} GB of weights needs "
                           f"about {(2 * weight_bytes + 4 * MIN_WORKSPACE_MB * (1 << 20)) / 1e9:.1f} "
                           f"GB free on this Jetson, which has {available / 1e9:.1f} GB; close "
                           "other programs, use a smaller or int8 export, or pass --workspace")
    return mb
# ONNX ops that TensorRT should run in fp32 inside an fp16 engine (same policy as the fp16 ONNX
# export in export/precision.py): normalisations and softmax, and what feeds them.
# Layers walked back from a pinned layer, per pinned type, and how far: the attention scores
# feeding Softmax (QK^T, scale, mask add/select — as in the fp16 ONNX export), and the residual
# add feeding a normalisation (whose variance overflows fp16 first).
FEEDERS = {"SOFTMAX": (("ELEMENTWISE", "MATRIX_MULTIPLY", "SELECT"), 3),
           "NORMALIZATION": (("ELEMENTWISE",), 1)}


# --------------------------------------------------------------------------------------------
# import / availability
# --------------------------------------------------------------------------------------------

def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt


def require_tensorrt(out: str | Path | None = None, fp16: bool = False, int8: bool = False):
    """Return the ``tensorrt`` module (>= 10) or raise a one-line MissingDependency.

    The message names the missing package and the equivalent ``trtexec`` command(s) to run
    on the target (from ``out``'s manifest when it already exists).
    """
    trt = _import_tensorrt()
    if trt is not None:
        major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
        if major < MIN_TRT_MAJOR:
            raise MissingDependency(
                f"TensorRT {trt.__version__} is too old; this toolkit builds with TensorRT >= "
                f"{MIN_TRT_MAJOR} (JetPack 6 or pip install 'tensorrt>=10')")
        return trt
    cmds = trtexec_hint(out, fp16=fp16, int8=int8)
    raise MissingDependency(
        "the Python package 'tensorrt' (TensorRT >= 10) is not installed here, so engines "
        "cannot be built on this machine; on the target (Jetson JetPack 6 or a CUDA 12 server) "
        f"run `toolkit build {out if out is not None else 'ARTIFACT_DIR'}` or NVIDIA's tool: "
        + " ; ".join(cmds))


def trtexec_hint(out: str | Path | None, fp16: bool = False, int8: bool = False) -> list[str]:
    """trtexec command lines for every graph of ``out`` (generic form when not exported yet)."""
    precision = "int8" if int8 else "fp16" if fp16 else None
    if out is not None and (Path(out) / MANIFEST).is_file():
        try:
            manifest = load_manifest(out, verify_hashes=False)
        except ToolkitError:
            manifest = None
        if manifest is not None:
            prec = precision or manifest.get("precision", "fp32")
            return [trtexec_command(Path(out) / g["file"],
                                    Path(out) / engine_filename(name, prec),
                                    g.get("trt_profiles") or {}, prec)
                    for name, g in manifest["graphs"].items()]
    d = Path(out) if out is not None else Path("ARTIFACT_DIR")
    return [trtexec_command(d / "GRAPH.onnx", d / f"GRAPH.{precision or 'fp32'}.plan", {},
                            precision or "fp32") + " (one per graph; shapes from manifest.json "
                                                  "trt_profiles)"]


# --------------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------------

def parse_profile_overrides(specs: Sequence[str] | None) -> dict[str, tuple]:
    """``["tokens=1:64:448", "mel=1x80x100:1x80x3000:1x80x3000"]`` → {name: (min, opt, max)}.

    Plain integers override a named dynamic axis; ``x``-separated shapes override a whole
    input. Values are ints (axis) or tuples of ints (input shape).
    """
    out: dict[str, tuple] = {}
    for spec in specs or ():
        name, sep, rng = str(spec).partition("=")
        parts = rng.split(":")
        if not sep or not name.strip() or len(parts) != 3:
            raise ToolkitError(f"--profile {spec!r} is not NAME=min:opt:max (e.g. tokens=1:64:448 "
                               "for a dynamic axis, or mel=1x80x100:1x80x3000:1x80x3000 for an input)")
        try:
            if any("x" in p for p in parts):
                vals = tuple(tuple(int(d) for d in p.split("x")) for p in parts)
                if len({len(v) for v in vals}) != 1:
                    raise ValueError
                bad = any(not (a <= b <= c) for a, b, c in zip(*vals))
            else:
                vals = tuple(int(p) for p in parts)
                bad = not (vals[0] <= vals[1] <= vals[2])
        except ValueError:
            raise ToolkitError(f"--profile {spec!r}: min:opt:max must be integers (axis) or "
                               "equal-rank AxBxC shapes (input)") from None
        if bad or any((min(v) if isinstance(v, tuple) else v) < 0 for v in vals):
            raise ToolkitError(f"--profile {spec!r}: need 0 <= min <= opt <= max")
        out[name.strip()] = vals
    return out


def graph_profiles(graph: Mapping, overrides: Mapping[str, tuple] | None = None,
                   graph_name: str = "?") -> dict[str, dict]:
    """min/opt/max per dynamic input of one manifest graph, overrides applied and checked."""
    overrides = dict(overrides or {})
    profiles = {k: {"min": list(v["min"]), "opt": list(v["opt"]), "max": list(v["max"])}
                for k, v in (graph.get("trt_profiles") or {}).items()}
    for inp in graph.get("inputs", []):
        name, shape = inp["name"], list(inp["shape"])
        dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
        if name in overrides:
            mn, op, mx = overrides[name]
            if not isinstance(mn, tuple):
                raise ToolkitError(f"--profile {name}=...: {name} is an input; give whole shapes "
                                   f"like {name}={'x'.join('1' if isinstance(d, str) else str(d) for d in shape)}:...")
            if len(mn) != len(shape):
                raise ToolkitError(f"--profile {name}: rank {len(mn)} but input {name} of graph "
                                   f"{graph_name} has rank {len(shape)} ({shape})")
            profiles[name] = {"min": list(mn), "opt": list(op), "max": list(mx)}
        for i in dynamic:
            axis = shape[i]
            if isinstance(axis, str) and axis in overrides and not isinstance(overrides[axis][0], tuple):
                if name not in profiles:
                    raise ToolkitError(f"input {name} of graph {graph_name} has no TensorRT profile "
                                       f"in the manifest to override; give its whole shape with "
                                       f"--profile {name}=MIN:OPT:MAX")
                for key, v in zip(("min", "opt", "max"), overrides[axis]):
                    profiles[name][key][i] = int(v)
        if dynamic and name not in profiles:
            raise ToolkitError(f"dynamic input {name} {shape} of graph {graph_name} has no TensorRT "
                               f"profile in the manifest; pass --profile {name}=MIN:OPT:MAX "
                               "(AxBxC shapes) or re-export the artifact")
        if name in profiles:
            p = profiles[name]
            for key in ("min", "opt", "max"):
                if len(p[key]) != len(shape):
                    raise ToolkitError(f"profile {key} shape {p[key]} of {graph_name}/{name} does "
                                       f"not match the input's rank {len(shape)}")
                for i, d in enumerate(shape):
                    if isinstance(d, int) and d > 0 and p[key][i] != d:
                        raise ToolkitError(f"profile {key} shape {p[key]} of {graph_name}/{name} "
                                           f"changes static axis {i} (= {d})")
            if any(not (a <= b <= c) for a, b, c in zip(p["min"], p["opt"], p["max"])):
                raise ToolkitError(f"profile of {graph_name}/{name} is not min <= opt <= max: {p}")
    return profiles


def profile_hash(profiles: Mapping[str, Mapping]) -> str:
    canon = json.dumps({k: {kk: list(v[kk]) for kk in ("min", "opt", "max")}
                        for k, v in sorted(profiles.items())}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# cache keys, names, trtexec
# --------------------------------------------------------------------------------------------

def engine_key(gpu: Mapping, trt_version: str, precision: str, profiles: Mapping,
               onnx_sha256: str) -> dict:
    key = {"gpu": gpu["name"], "compute_capability": gpu["compute_capability"],
           "tensorrt": str(trt_version), "precision": precision,
           "profile_sha256": profile_hash(profiles), "onnx_sha256": onnx_sha256}
    key["key_sha256"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return key


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def engine_filename(graph: str, precision: str, key: Mapping | None = None) -> str:
    if key is None:
        return f"{graph}.{precision}.plan"
    return (f"{graph}.{precision}.sm{key['compute_capability'].replace('.', '')}-"
            f"trt{key['tensorrt']}-{key['key_sha256'][:8]}.plan")


def default_timing_cache(gpu: Mapping, trt_version: str) -> Path:
    base = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
    return (Path(base) / "tensorrt" /
            f"timing-{_slug(gpu['name'])}-sm{gpu['compute_capability'].replace('.', '')}-"
            f"trt{trt_version}.cache")


def _shapes_arg(profiles: Mapping, key: str) -> str:
    return ",".join(f"{n}:{'x'.join(str(int(d)) for d in p[key])}" for n, p in profiles.items())


def trtexec_command(onnx_path: Path, engine_path: Path, profiles: Mapping, precision: str,
                    workspace_mb: int = DEFAULT_WORKSPACE_MB, timing_cache: Path | None = None,
                    fp32_layers: Sequence[str] = ()) -> str:
    """The trtexec line that builds the same engine with NVIDIA's own tool."""
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if profiles:
        args += [f"--minShapes={_shapes_arg(profiles, 'min')}",
                 f"--optShapes={_shapes_arg(profiles, 'opt')}",
                 f"--maxShapes={_shapes_arg(profiles, 'max')}"]
    if precision == "fp16":
        args.append("--fp16")
        if fp32_layers:
            args += ["--precisionConstraints=obey",
                     "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers)]
    elif precision == "int8":
        args.append("--int8")  # explicit quantization: the QDQ graph carries the scales
    args.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)


# --------------------------------------------------------------------------------------------
# building one engine
# --------------------------------------------------------------------------------------------

def _parse_onnx(trt, network, logger, path: Path, graph_name: str) -> None:
    """Parse ``path`` into ``network``; raise one ToolkitError listing every parser error."""
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    if ok and parser.num_errors == 0:
        return
    node_names = None
    problems = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        name = e.node_name() if hasattr(e, "node_name") else ""
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        if (not name or not op) and e.node() >= 0:
            if node_names is None:
                import onnx

                g = onnx.load(str(path), load_external_data=False).graph
                node_names = [(n.name, n.op_type) for n in g.node]
            if e.node() < len(node_names):
                name, op = name or node_names[e.node()][0], op or node_names[e.node()][1]
        where = f"node {name!r} ({op})" if (name or op) else "graph"
        problems.append(f"{where}: {e.desc()} [{e.code()}]")
    raise ToolkitError(f"TensorRT cannot parse graph {graph_name} ({path.name}): "
                       f"{len(problems)} error(s): " + "; ".join(problems) +
                       f" — run `toolkit check-trt {path.parent}` for the full static check")


def _pin_fp32_layers(trt, network, keep_fp32_typed: bool) -> list[str]:
    """Pin normalisation/softmax layers (and what feeds them) to fp32. Returns their names.

    With ``keep_fp32_typed`` (an fp16 ONNX graph), every layer whose float outputs the export
    kept fp32 is pinned as well, so the engine honours the export's own fp32 islands.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer = {}
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
    feeders = {getattr(trt.LayerType, t): ({getattr(trt.LayerType, f) for f in fs}, hops)
               for t, (fs, hops) in FEEDERS.items()}
    chosen: dict[str, object] = {}
    for layer in layers:
        if layer.type in feeders:
            feeder_types, hops = feeders[layer.type]
            chosen[layer.name] = layer
            frontier = [layer]
            for _ in range(hops):
                nxt = []
                for lay in frontier:
                    for k in range(lay.num_inputs):
                        t = lay.get_input(k)
                        p = producer.get(t.name) if t is not None else None
                        if p is not None and p.type in feeder_types and p.name not in chosen:
                            chosen[p.name] = p
                            nxt.append(p)
                frontier = nxt
        elif keep_fp32_typed and layer.num_outputs and all(
                layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)) \
                and layer.type not in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            chosen[layer.name] = layer
    for layer in chosen.values():
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
    return list(chosen)


def _has_qdq(path: Path) -> bool:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type == "QuantizeLinear" for n in g.node) and \
        any(n.op_type == "DequantizeLinear" for n in g.node)


def build_engine(trt, onnx_path: Path, graph_name: str, profiles: Mapping[str, Mapping],
                 precision: str, artifact_precision: str, workspace_mb: int,
                 timing_cache: Path) -> tuple[bytes, dict]:
    """Build one serialized engine. Returns (engine bytes, build info)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    _parse_onnx(trt, network, logger, onnx_path, graph_name)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    pinned: list[str] = []
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _pin_fp32_layers(trt, network, keep_fp32_typed=artifact_precision == "fp16")
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    elif precision == "int8":
        # explicit quantization: scales come from the graph's Q/DQ nodes; no calibrator is set
        config.set_flag(trt.BuilderFlag.INT8)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, p in profiles.items():
            profile.set_shape(name, tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        raise ToolkitError(f"TensorRT failed to build graph {graph_name} at {precision} (see the "
                           "TensorRT log above); try a larger --workspace or check "
                           f"`toolkit check-trt {onnx_path.parent}`")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), {"build_s": round(build_s, 3), "fp32_layers": pinned,
                               "timing_cache_reused": bool(cache_bytes)}


# --------------------------------------------------------------------------------------------
# whole artifact
# --------------------------------------------------------------------------------------------

def _copy_artifact(src: Path, dst: Path) -> None:
    with atomic_dir(dst, is_artifact, hint=NEW_OUT_HINT) as tmp:
        for item in src.iterdir():
            if item.name.startswith(".") and item.name.endswith(".tmp"):
                continue
            target = tmp / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)


def build_artifact(artifact_dir: str | Path, fp16: bool = False, int8: bool = False,
                   workspace_mb: int | None = None, timing_cache: str | Path | None = None,
                   out: str | Path | None = None,
                   profile_overrides: Mapping[str, tuple] | Sequence[str] | None = None,
                   force: bool = False) -> dict:
    """Build a TensorRT engine for every graph of an artifact; returns the updated manifest.

    Precision: ``--int8`` (needs the int8 QDQ export), ``--fp16``, else the artifact's own
    precision (fp32 → fp32 engine, fp16 → fp16, int8 → int8).
    """
    if fp16 and int8:
        raise ToolkitError("choose one of --fp16 and --int8")
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    if workspace_mb is not None and workspace_mb <= 0:
        raise ToolkitError(f"--workspace must be a positive number of MiB, not {workspace_mb}")
    if isinstance(profile_overrides, (list, tuple)):
        profile_overrides = parse_profile_overrides(profile_overrides)
    overrides = dict(profile_overrides or {})
    known = {inp["name"] for g in manifest["graphs"].values() for inp in g.get("inputs", [])} | \
        {d for g in manifest["graphs"].values() for inp in g.get("inputs", [])
         for d in inp["shape"] if isinstance(d, str)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ToolkitError(f"--profile names {unknown} match no input or dynamic axis of this "
                           f"artifact; known: {sorted(known)}")
    art_prec = manifest.get("precision", "fp32")
    if art_prec == "int8-cpu":
        raise ToolkitError(f"{artifact_dir} is the onnxruntime-CPU int8 form (uint8 activations, "
                           "non-zero zero points), which TensorRT cannot build; re-export with "
                           "`toolkit export <model> --int8` (the default --int8-target trt)")
    precision = "int8" if int8 else "fp16" if fp16 else art_prec
    if precision == "int8":
        if art_prec != "int8":
            raise ToolkitError(f"--int8 needs the int8 QDQ export (explicit quantization); "
                               f"{artifact_dir} is {art_prec} — run `toolkit export <model> --int8 "
                               "--calib-data DIR` first (implicit INT8 calibration is not used)")
        for name, g in manifest["graphs"].items():
            if not _has_qdq(artifact_dir / g["file"]):
                raise ToolkitError(f"graph {name} of {artifact_dir} has no QuantizeLinear/"
                                   "DequantizeLinear nodes; re-export it with --int8")
    elif art_prec == "int8":
        raise ToolkitError(f"{artifact_dir} is an int8 QDQ export; build it with --int8, or "
                           "export fp32/fp16 graphs for an fp32/fp16 engine")
    trt = require_tensorrt(artifact_dir, fp16=fp16, int8=int8)

    gpu = hardware.gpu_identity()
    trt_version = str(trt.__version__)
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(gpu, trt_version)
    target = artifact_dir
    if out is not None and Path(out).resolve() != artifact_dir.resolve():
        target = check_writable(check_replaceable(out, is_artifact, hint=NEW_OUT_HINT))
        _copy_artifact(artifact_dir, target)
        manifest = load_manifest(target)
    with Steps(f"TensorRT {trt_version} engines ({precision}) on {gpu['name']}",
               total=len(manifest["graphs"])) as bar:
        for name, g in manifest["graphs"].items():
            onnx_path = target / g["file"]
            profiles = graph_profiles(g, overrides, name)
            # the weights are part of what an engine is built from: the data files' hashes too
            digest = g.get("sha256") or sha256_file(onnx_path)
            if g.get("data_files"):
                digest = hashlib.sha256("".join([digest] + [d["sha256"] for d in g["data_files"]])
                                        .encode()).hexdigest()
            key = engine_key(gpu, trt_version, precision, profiles, digest)
            engines = [e for e in g.get("engines", []) if isinstance(e, dict)]
            hit = next((e for e in engines if e.get("key", {}).get("key_sha256") == key["key_sha256"]
                        and (target / e["file"]).is_file()
                        and sha256_file(target / e["file"]) == e.get("sha256")), None)
            if hit is not None and not force:
                console.print(f"  {name}: cached engine {hit['file']} (same GPU, TensorRT, "
                              "precision, profile and graph)")
                bar.advance(name)
                continue
            weights = int(g.get("bytes") or 0) + sum(int(d.get("bytes") or 0)
                                                     for d in g.get("data_files") or [])
            ws = workspace_mb or default_workspace_mb(weights)
            data, info = build_engine(trt, onnx_path, name, profiles, precision, art_prec,
                                      ws, cache_path)
            fname = engine_filename(name, precision, key)
            atomic_write_bytes(target / fname, data)
            entry = {
                "file": fname, "key": key, "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data), "build_s": info["build_s"],
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "profiles": profiles, "workspace_mb": int(ws),
                "workspace_default": workspace_mb is None,
                "fp32_layers": len(info["fp32_layers"]),
                "timing_cache": str(cache_path), "timing_cache_reused": info["timing_cache_reused"],
                "trtexec": trtexec_command(target / g["file"], target / fname, profiles, precision,
                                           ws, cache_path, info["fp32_layers"]),
            }
            with locked(target):  # read-modify-write: keep engines another build added meanwhile
                manifest = load_manifest(target, verify_hashes=False)
                current = [e for e in manifest["graphs"][name].get("engines", []) or []
                           if isinstance(e, dict)]
                manifest["graphs"][name]["engines"] = [
                    e for e in current
                    if e.get("key", {}).get("key_sha256") != key["key_sha256"]] + [entry]
                _write_manifest_atomic(target, manifest)
            console.print(f"  {name}: {fname} ({len(data) / 2**20:.1f} MiB, built in "
                          f"{info['build_s']:.1f} s, {len(info['fp32_layers'])} layers pinned fp32)")
            bar.advance(name)
    return manifest


def _write_manifest_atomic(directory: Path, manifest: dict) -> None:
    atomic_write_bytes(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def find_engine(manifest_graph: Mapping, precision: str) -> list[dict]:
    """Engine entries of one manifest graph at ``precision`` (newest last)."""
    return [e for e in manifest_graph.get("engines", []) or []
            if isinstance(e, dict) and e.get("key", {}).get("precision") == precision]

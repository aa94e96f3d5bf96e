"""TensorRT 10 and 11 engines from an exported artifact (``toolkit build``,
``toolkit export --trt``).

One builder for both major versions. **Precision comes from the graph**: the network is
strongly typed (TensorRT 10: ``1 << STRONGLY_TYPED``; TensorRT 11: every network is, the flag is
deprecated and not passed), so an fp32 artifact gives an fp32 engine, the fp16 export (its fp32
islands written as explicit Casts) an fp16 engine that honours those islands exactly, and the
int8 QDQ export an int8 engine whose scales are its Q/DQ nodes. No precision flag is set.

``--fp16`` on an fp32 artifact is refused in one line naming ``toolkit export MODEL --fp16``: the
safe fp16 graph is chosen from activation ranges on real inputs and validated against PyTorch,
which needs the model and its data, and a build machine (a Jetson) holds only the artifact; a
build command also must not rewrite the artifact's graphs.

TensorRT 10 only, behind a version check: ``weakly_typed=True`` (``--weakly-typed``) keeps the
weakly typed path that 10.x still has — ``BuilderFlag.FP16`` with LayerNorm/Softmax (and the
layers feeding them, and an fp16 export's own fp32 layers) pinned by ``layer.precision`` /
``set_output_type`` + ``OBEY_PRECISION_CONSTRAINTS``, or ``BuilderFlag.INT8`` for a QDQ graph —
so an fp32 artifact can still become an fp16 engine on a Jetson without a re-export. On
TensorRT 11 those names do not exist and the option is refused.

For every graph in the artifact's manifest:

- parse the ONNX file with ``trt.OnnxParser.parse_from_file`` (every parser error is reported
  with its node name and op type; external data resolves beside the file);
- one optimization profile per graph from the manifest's ``trt_profiles`` (min/opt/max per
  dynamic input), with user overrides ``--profile AXIS=min:opt:max`` (a named dynamic axis,
  e.g. ``tokens=1:64:448``, applied to every input that has that axis) or
  ``--profile INPUT=1x80x100:1x80x3000:1x80x3000`` (the whole shape of one input);
- a timing cache reused across builds (per GPU + TensorRT version unless ``--timing-cache``);
- an engine cache keyed by GPU name + compute capability, TensorRT version, precision, typing,
  profile and graph hash: a build whose key matches an existing engine is skipped;
- the engine is written atomically next to its graph, and the manifest's ``engines`` list for
  that graph records the key, build time, size and the ``trtexec`` command line that builds
  the same engine with the trtexec of that TensorRT version (TensorRT 11's has no ``--fp16``,
  ``--int8`` or ``--best``; its ``--stronglyTyped`` is a deprecated no-op).

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
DEFAULT_WORKSPACE_MB = 2048  # discrete GPUs (dedicated memory)
MIN_WORKSPACE_MB = 256


def default_workspace_mb(
    weight_bytes: int, jetson: bool | None = None, available: int | None = None
) -> int:
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
        raise ToolkitError(
            f"building an engine for {weight_bytes / 1e9:.1f} GB of weights needs "
            f"about {(2 * weight_bytes + 4 * MIN_WORKSPACE_MB * (1 << 20)) / 1e9:.1f} "
            f"GB free on this Jetson, which has {available / 1e9:.1f} GB; close "
            "other programs, use a smaller or int8 export, or pass --workspace"
        )
    return mb


# TensorRT 10 weakly typed builds only: layers TensorRT should run in fp32 inside an fp16
# engine (same policy as the fp16 ONNX export in export/precision.py). Layers walked back
# from a pinned layer, per pinned type, and how far: the attention scores feeding Softmax
# (QK^T, scale, mask add/select — as in the fp16 ONNX export), and the residual add feeding
# a normalisation (whose variance overflows fp16 first).
FEEDERS = {
    "SOFTMAX": (("ELEMENTWISE", "MATRIX_MULTIPLY", "SELECT"), 3),
    "NORMALIZATION": (("ELEMENTWISE",), 1),
}


# --------------------------------------------------------------------------------------------
# import / availability
# --------------------------------------------------------------------------------------------


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return trt


def trt_major(trt) -> int:
    """The major version of a ``tensorrt`` module (``"11.4.0.106"`` → 11)."""
    try:
        return int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    except ValueError:
        return 0


def require_tensorrt(out: str | Path | None = None, fp16: bool = False, int8: bool = False):
    """Return the ``tensorrt`` module (10 or 11) or raise a one-line MissingDependency.

    The message names the missing package and the equivalent ``trtexec`` command(s) to run
    on the target (from ``out``'s manifest when it already exists).
    """
    trt = _import_tensorrt()
    if trt is not None:
        if trt_major(trt) < MIN_TRT_MAJOR:
            raise MissingDependency(
                f"TensorRT {trt.__version__} is too old; this toolkit builds with TensorRT 10 or "
                "11 (JetPack 6.1+ ships 10.3; on a server pip install 'tensorrt>=10')"
            )
        return trt
    cmds = trtexec_hint(out, fp16=fp16, int8=int8)
    raise MissingDependency(
        "the Python package 'tensorrt' (TensorRT 10 or 11) is not installed here, so engines "
        "cannot be built on this machine; on the target (Jetson JetPack 6.1+ or a CUDA server) "
        f"run `toolkit build {out if out is not None else 'ARTIFACT_DIR'}` or NVIDIA's tool: "
        + " ; ".join(cmds)
    )


def trtexec_hint(out: str | Path | None, fp16: bool = False, int8: bool = False) -> list[str]:
    """trtexec command lines for every graph of ``out`` (generic form when not exported yet).

    The TensorRT version of the target is unknown here, so the lines carry ``--stronglyTyped``:
    needed on TensorRT 10 (else an fp16 graph builds as fp32), a deprecated no-op on 11."""
    if out is not None and (Path(out) / MANIFEST).is_file():
        try:
            manifest = load_manifest(out, verify_hashes=False)
        except ToolkitError:
            manifest = None
        if manifest is not None:
            prec = manifest.get("precision", "fp32")
            return [
                trtexec_command(
                    Path(out) / g["file"],
                    Path(out) / engine_filename(name, prec),
                    g.get("trt_profiles") or {},
                    prec,
                    major=10,
                )
                for name, g in manifest["graphs"].items()
            ]
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    d = Path(out) if out is not None else Path("ARTIFACT_DIR")
    return [
        trtexec_command(d / "GRAPH.onnx", d / f"GRAPH.{precision}.plan", {}, precision, major=10)
        + " (one per graph; shapes from manifest.json trt_profiles)"
    ]


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
            raise ToolkitError(
                f"--profile {spec!r} is not NAME=min:opt:max (e.g. tokens=1:64:448 "
                "for a dynamic axis, or mel=1x80x100:1x80x3000:1x80x3000 for an input)"
            )
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
            raise ToolkitError(
                f"--profile {spec!r}: min:opt:max must be integers (axis) or "
                "equal-rank AxBxC shapes (input)"
            ) from None
        if bad or any((min(v) if isinstance(v, tuple) else v) < 0 for v in vals):
            raise ToolkitError(f"--profile {spec!r}: need 0 <= min <= opt <= max")
        out[name.strip()] = vals
    return out


def _check_profile(p: Mapping, shape: list, where: str) -> None:
    """One input's min/opt/max: the input's rank, its static axes kept, min <= opt <= max."""
    for key in ("min", "opt", "max"):
        if len(p[key]) != len(shape):
            raise ToolkitError(f"profile {key} shape {p[key]} of {where} does not match the "
                               f"input's rank {len(shape)}")
        for i, d in enumerate(shape):
            if isinstance(d, int) and d > 0 and p[key][i] != d:
                raise ToolkitError(f"profile {key} shape {p[key]} of {where} changes static "
                                   f"axis {i} (= {d})")
    if any(not (a <= b <= c) for a, b, c in zip(p["min"], p["opt"], p["max"])):
        raise ToolkitError(f"profile of {where} is not min <= opt <= max: {p}")


def graph_profiles(
    graph: Mapping, overrides: Mapping[str, tuple] | None = None, graph_name: str = "?"
) -> dict[str, dict]:
    """min/opt/max per dynamic input of one manifest graph, overrides applied and checked."""
    overrides = dict(overrides or {})
    profiles = {
        k: {"min": list(v["min"]), "opt": list(v["opt"]), "max": list(v["max"])}
        for k, v in (graph.get("trt_profiles") or {}).items()
    }
    for inp in graph.get("inputs", []):
        name, shape = inp["name"], list(inp["shape"])
        dynamic = [i for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
        if name in overrides:
            mn, op, mx = overrides[name]
            if not isinstance(mn, tuple):
                example = "x".join("1" if isinstance(d, str) else str(d) for d in shape)
                raise ToolkitError(f"--profile {name}=...: {name} is an input; give whole "
                                   f"shapes like {name}={example}:...")
            if len(mn) != len(shape):
                raise ToolkitError(
                    f"--profile {name}: rank {len(mn)} but input {name} of graph "
                    f"{graph_name} has rank {len(shape)} ({shape})"
                )
            profiles[name] = {"min": list(mn), "opt": list(op), "max": list(mx)}
        for i in dynamic:
            axis = shape[i]
            if (
                isinstance(axis, str)
                and axis in overrides
                and not isinstance(overrides[axis][0], tuple)
            ):
                if name not in profiles:
                    raise ToolkitError(
                        f"input {name} of graph {graph_name} has no TensorRT profile "
                        f"in the manifest to override; give its whole shape with "
                        f"--profile {name}=MIN:OPT:MAX"
                    )
                for key, v in zip(("min", "opt", "max"), overrides[axis]):
                    profiles[name][key][i] = int(v)
        if dynamic and name not in profiles:
            raise ToolkitError(
                f"dynamic input {name} {shape} of graph {graph_name} has no TensorRT "
                f"profile in the manifest; pass --profile {name}=MIN:OPT:MAX "
                "(AxBxC shapes) or re-export the artifact"
            )
        if name in profiles:
            _check_profile(profiles[name], shape, f"{graph_name}/{name}")
    return profiles


def profile_hash(profiles: Mapping[str, Mapping]) -> str:
    canon = json.dumps(
        {k: {kk: list(v[kk]) for kk in ("min", "opt", "max")} for k, v in sorted(profiles.items())},
        sort_keys=True,
    )
    return hashlib.sha256(canon.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# cache keys, names, trtexec
# --------------------------------------------------------------------------------------------


def engine_key(
    gpu: Mapping,
    trt_version: str,
    precision: str,
    profiles: Mapping,
    onnx_sha256: str,
    typing: str = "strong",
) -> dict:
    key = {
        "gpu": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "tensorrt": str(trt_version),
        "precision": precision,
        "typing": typing,
        "profile_sha256": profile_hash(profiles),
        "onnx_sha256": onnx_sha256,
    }
    key["key_sha256"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return key


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def engine_filename(graph: str, precision: str, key: Mapping | None = None) -> str:
    if key is None:
        return f"{graph}.{precision}.plan"
    return (
        f"{graph}.{precision}.sm{key['compute_capability'].replace('.', '')}-"
        f"trt{key['tensorrt']}-{key['key_sha256'][:8]}.plan"
    )


def default_timing_cache(gpu: Mapping, trt_version: str) -> Path:
    base = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
    return (
        Path(base)
        / "tensorrt"
        / f"timing-{_slug(gpu['name'])}-sm{gpu['compute_capability'].replace('.', '')}-"
        f"trt{trt_version}.cache"
    )


def _shapes_arg(profiles: Mapping, key: str) -> str:
    return ",".join(f"{n}:{'x'.join(str(int(d)) for d in p[key])}" for n, p in profiles.items())


def trtexec_command(
    onnx_path: Path,
    engine_path: Path,
    profiles: Mapping,
    precision: str,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: Path | None = None,
    fp32_layers: Sequence[str] = (),
    major: int = 10,
    weakly_typed: bool = False,
) -> str:
    """The trtexec line that builds the same engine with NVIDIA's own tool, for the trtexec of
    TensorRT ``major``: strongly typed (10: ``--stronglyTyped``; 11: the default, nothing to
    pass — 11's trtexec has no ``--fp16``/``--int8``/``--best``), or 10's weakly typed flags."""
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if profiles:
        args += [
            f"--minShapes={_shapes_arg(profiles, 'min')}",
            f"--optShapes={_shapes_arg(profiles, 'opt')}",
            f"--maxShapes={_shapes_arg(profiles, 'max')}",
        ]
    if weakly_typed:
        if major >= 11:
            raise ToolkitError("TensorRT 11's trtexec builds strongly typed networks only")
        if precision == "fp16":
            args.append("--fp16")
            if fp32_layers:
                args += [
                    "--precisionConstraints=obey",
                    "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers),
                ]
        elif precision == "int8":
            args.append("--int8")  # explicit quantization: the QDQ graph carries the scales
    elif major < 11:
        args.append("--stronglyTyped")
    args.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)


# --------------------------------------------------------------------------------------------
# building one engine
# --------------------------------------------------------------------------------------------


def network_flags(trt, weakly_typed: bool = False) -> int:
    """``create_network`` flags: strongly typed on both majors. TensorRT 10 needs
    ``1 << STRONGLY_TYPED`` (its value is 1 there, 0 in 11 — never hard-code the bit);
    TensorRT 11 networks are always strongly typed and its flag is deprecated, so 0."""
    if weakly_typed or trt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


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
    raise ToolkitError(
        f"TensorRT cannot parse graph {graph_name} ({path.name}): "
        f"{len(problems)} error(s): "
        + "; ".join(problems)
        + f" — run `toolkit check-trt {path.parent}` for the full static check"
    )


def _feeders(trt, layers) -> dict[str, object]:
    """Normalisation/softmax layers and the layers feeding them (``FEEDERS``), by name."""
    producer = {}
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
    feeders = {
        getattr(trt.LayerType, t): ({getattr(trt.LayerType, f) for f in fs}, hops)
        for t, (fs, hops) in FEEDERS.items()
    }
    chosen: dict[str, object] = {}
    for layer in layers:
        if layer.type not in feeders:
            continue
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
    return chosen


def _pin_fp32_layers(trt, network, keep_fp32_typed: bool) -> list[str]:
    """TensorRT 10, weakly typed only: pin normalisation/softmax layers (and what feeds them)
    to fp32. Returns their names.

    With ``keep_fp32_typed`` (an fp16 ONNX graph), every layer whose float outputs the export
    kept fp32 is pinned as well, so the engine honours the export's own fp32 islands.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    chosen = _feeders(trt, layers)
    if keep_fp32_typed:
        for layer in layers:
            if (
                layer.name not in chosen
                and layer.num_outputs
                and all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs))
                and layer.type not in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE)
            ):
                chosen[layer.name] = layer
    for layer in chosen.values():
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
    return list(chosen)


def _weak_precision(trt, network, config, precision: str, artifact_precision: str) -> list[str]:
    """TensorRT 10's weakly typed precision flags (``weakly_typed=True`` only)."""
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _pin_fp32_layers(trt, network, keep_fp32_typed=artifact_precision == "fp16")
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        return pinned
    if precision == "int8":
        # explicit quantization: scales come from the graph's Q/DQ nodes; no calibrator is set
        config.set_flag(trt.BuilderFlag.INT8)
    return []


def _has_qdq(path: Path) -> bool:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type == "QuantizeLinear" for n in g.node) and any(
        n.op_type == "DequantizeLinear" for n in g.node
    )


def _add_profile(builder, config, profiles: Mapping[str, Mapping]) -> None:
    if profiles:
        profile = builder.create_optimization_profile()
        for name, p in profiles.items():
            profile.set_shape(name, tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        config.add_optimization_profile(profile)


def build_engine(
    trt,
    onnx_path: Path,
    graph_name: str,
    profiles: Mapping[str, Mapping],
    precision: str,
    artifact_precision: str,
    workspace_mb: int,
    timing_cache: Path,
    weakly_typed: bool = False,
) -> tuple[bytes, dict]:
    """Build one serialized engine. Returns (engine bytes, build info)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, weakly_typed))
    _parse_onnx(trt, network, logger, onnx_path, graph_name)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    pinned = (
        _weak_precision(trt, network, config, precision, artifact_precision) if weakly_typed else []
    )
    _add_profile(builder, config, profiles)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        raise ToolkitError(
            f"TensorRT failed to build graph {graph_name} at {precision} (see the "
            "TensorRT log above); try a larger --workspace or check "
            f"`toolkit check-trt {onnx_path.parent}`"
        )
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), {
        "build_s": round(build_s, 3),
        "fp32_layers": pinned,
        "timing_cache_reused": bool(cache_bytes),
    }


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


def _export_command(manifest: Mapping, precision: str) -> str:
    """The ``toolkit export`` line that makes this artifact's model at ``precision``."""
    src = manifest.get("source") or {}
    origin = (
        f" --checkpoint {src['checkpoint']}"
        if src.get("checkpoint")
        else f" --preset {src['preset']}"
        if src.get("preset")
        else ""
    )
    flag = {"fp16": " --fp16", "int8": " --int8"}.get(precision, "")
    return f"toolkit export {manifest.get('family', 'MODEL')}{origin}{flag}"


def _check_overrides(manifest: Mapping, overrides: Mapping) -> None:
    graphs = manifest["graphs"].values()
    known = {inp["name"] for g in graphs for inp in g.get("inputs", [])} | {
        d for g in graphs for inp in g.get("inputs", []) for d in inp["shape"] if isinstance(d, str)
    }
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ToolkitError(
            f"--profile names {unknown} match no input or dynamic axis of this "
            f"artifact; known: {sorted(known)}"
        )


def build_precision(
    manifest: Mapping,
    artifact_dir: Path,
    fp16: bool = False,
    int8: bool = False,
    weakly_typed: bool = False,
) -> str:
    """The engine precision a build request means, or a one-line ToolkitError.

    Strongly typed (the default): the precision is the artifact's own; ``--fp16``/``--int8``
    only confirm it. ``weakly_typed`` (TensorRT 10) also lets ``--fp16`` turn an fp32 graph
    into an fp16 engine through builder flags."""
    if fp16 and int8:
        raise ToolkitError("choose one of --fp16 and --int8")
    art = manifest.get("precision", "fp32")
    if art == "int4":
        raise ToolkitError(f"{artifact_dir} is the int4 form (onnxruntime CPU MatMulNBits), "
                           "which TensorRT cannot build; re-export with "
                           f"`{_export_command(manifest, 'int8')}`")
    if art == "int8-cpu":
        raise ToolkitError(
            f"{artifact_dir} is the onnxruntime-CPU int8 form (uint8 activations, "
            "non-zero zero points), which TensorRT cannot build; re-export with "
            f"`{_export_command(manifest, 'int8')}` (the default --int8-target trt)"
        )
    if int8 and art != "int8":
        raise ToolkitError(
            f"--int8 needs the int8 QDQ export (explicit quantization); "
            f"{artifact_dir} is {art} — run `{_export_command(manifest, 'int8')} "
            "--calib-data DIR` first (implicit INT8 calibration is not used)"
        )
    if fp16 and art == "int8":
        raise ToolkitError(
            f"{artifact_dir} is an int8 QDQ export, which builds an int8 engine "
            "(drop --fp16); for an fp16 engine build the fp16 export "
            f"(`{_export_command(manifest, 'fp16')}`)"
        )
    if fp16 and art == "fp32" and not weakly_typed:
        raise ToolkitError(
            f"{artifact_dir} is an fp32 export and TensorRT builds the precision "
            "its graphs carry (strongly typed); export the fp16 graphs, whose "
            "fp32 islands are checked on real data: "
            f"`{_export_command(manifest, 'fp16')}`, and build that "
            "(TensorRT 10 only: --weakly-typed builds fp16 from this one)"
        )
    precision = "fp16" if fp16 else art
    if precision == "int8":
        for name, g in manifest["graphs"].items():
            if not _has_qdq(artifact_dir / g["file"]):
                raise ToolkitError(
                    f"graph {name} of {artifact_dir} has no QuantizeLinear/"
                    "DequantizeLinear nodes; re-export it with --int8"
                )
    return precision


def _check_typing(trt, weakly_typed: bool, manifest: Mapping) -> None:
    if weakly_typed and trt_major(trt) >= 11:
        raise ToolkitError(
            f"--weakly-typed needs TensorRT 10; TensorRT {trt.__version__} builds "
            "strongly typed networks only (BuilderFlag.FP16/INT8 and layer "
            "precisions are gone) — build the fp16 export instead: "
            f"`{_export_command(manifest, 'fp16')}`"
        )


def _graph_digest(g: Mapping, onnx_path: Path) -> str:
    """The graph's hash, with its data files' hashes (the weights are part of an engine)."""
    digest = g.get("sha256") or sha256_file(onnx_path)
    if g.get("data_files"):
        digest = hashlib.sha256(
            "".join([digest] + [d["sha256"] for d in g["data_files"]]).encode()
        ).hexdigest()
    return digest


def _cached_engine(target: Path, g: Mapping, key: Mapping) -> dict | None:
    engines = [e for e in g.get("engines", []) if isinstance(e, dict)]
    return next(
        (
            e
            for e in engines
            if e.get("key", {}).get("key_sha256") == key["key_sha256"]
            and (target / e["file"]).is_file()
            and sha256_file(target / e["file"]) == e.get("sha256")
        ),
        None,
    )


def _record_engine(target: Path, name: str, key: Mapping, entry: dict) -> dict:
    """Add ``entry`` to graph ``name``'s engines (replacing one of the same key) under the
    directory lock, keeping engines another build added meanwhile. Returns the manifest."""
    with locked(target):
        manifest = load_manifest(target, verify_hashes=False)
        current = [
            e for e in manifest["graphs"][name].get("engines", []) or [] if isinstance(e, dict)
        ]
        manifest["graphs"][name]["engines"] = [
            e for e in current if e.get("key", {}).get("key_sha256") != key["key_sha256"]
        ] + [entry]
        _write_manifest_atomic(target, manifest)
    return manifest


def _build_graph(trt, target: Path, name: str, g: Mapping, job: Mapping) -> tuple | None:
    """Build the engine of one graph: (key, new manifest entry), or None when cached."""
    onnx_path = target / g["file"]
    profiles = graph_profiles(g, job["overrides"], name)
    key = engine_key(
        job["gpu"],
        job["trt_version"],
        job["precision"],
        profiles,
        _graph_digest(g, onnx_path),
        "weak" if job["weakly_typed"] else "strong",
    )
    hit = _cached_engine(target, g, key)
    if hit is not None and not job["force"]:
        console.print(
            f"  {name}: cached engine {hit['file']} (same GPU, TensorRT, "
            "precision, profile and graph)"
        )
        return None
    weights = int(g.get("bytes") or 0) + sum(
        int(d.get("bytes") or 0) for d in g.get("data_files") or []
    )
    ws = job["workspace_mb"] or default_workspace_mb(weights)
    data, info = build_engine(
        trt,
        onnx_path,
        name,
        profiles,
        job["precision"],
        job["artifact_precision"],
        ws,
        job["cache_path"],
        job["weakly_typed"],
    )
    fname = engine_filename(name, job["precision"], key)
    atomic_write_bytes(target / fname, data)
    how = (
        f"weakly typed, {len(info['fp32_layers'])} layers pinned fp32"
        if job["weakly_typed"]
        else "strongly typed"
    )
    console.print(
        f"  {name}: {fname} ({len(data) / 2**20:.1f} MiB, built in {info['build_s']:.1f} s, {how})"
    )
    return key, {
        "file": fname,
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "build_s": info["build_s"],
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profiles": profiles,
        "workspace_mb": int(ws),
        "workspace_default": job["workspace_mb"] is None,
        "typing": key["typing"],
        "fp32_layers": len(info["fp32_layers"]),
        "timing_cache": str(job["cache_path"]),
        "timing_cache_reused": info["timing_cache_reused"],
        "trtexec": trtexec_command(
            onnx_path,
            target / fname,
            profiles,
            job["precision"],
            ws,
            job["cache_path"],
            info["fp32_layers"],
            trt_major(trt),
            job["weakly_typed"],
        ),
    }


def build_artifact(
    artifact_dir: str | Path,
    fp16: bool = False,
    int8: bool = False,
    workspace_mb: int | None = None,
    timing_cache: str | Path | None = None,
    out: str | Path | None = None,
    profile_overrides: Mapping[str, tuple] | Sequence[str] | None = None,
    force: bool = False,
    weakly_typed: bool = False,
) -> dict:
    """Build a TensorRT engine for every graph of an artifact; returns the updated manifest.

    Precision is the artifact's own (fp32 → fp32 engine, fp16 → fp16, int8 QDQ → int8);
    ``fp16``/``int8`` must agree with it, except that ``weakly_typed`` (TensorRT 10 only)
    builds fp16 from an fp32 artifact with builder flags (see ``build_precision``).
    """
    artifact_dir = Path(artifact_dir)
    manifest = load_manifest(artifact_dir)
    if workspace_mb is not None and workspace_mb <= 0:
        raise ToolkitError(f"--workspace must be a positive number of MiB, not {workspace_mb}")
    if isinstance(profile_overrides, (list, tuple)):
        profile_overrides = parse_profile_overrides(profile_overrides)
    overrides = dict(profile_overrides or {})
    _check_overrides(manifest, overrides)
    precision = build_precision(manifest, artifact_dir, fp16, int8, weakly_typed)
    trt = require_tensorrt(artifact_dir, fp16=fp16, int8=int8)
    _check_typing(trt, weakly_typed, manifest)
    gpu = hardware.gpu_identity()
    trt_version = str(trt.__version__)
    target = artifact_dir
    if out is not None and Path(out).resolve() != artifact_dir.resolve():
        target = check_writable(check_replaceable(out, is_artifact, hint=NEW_OUT_HINT))
        _copy_artifact(artifact_dir, target)
        manifest = load_manifest(target)
    job = {
        "gpu": gpu,
        "trt_version": trt_version,
        "precision": precision,
        "artifact_precision": manifest.get("precision", "fp32"),
        "overrides": overrides,
        "workspace_mb": workspace_mb,
        "force": force,
        "weakly_typed": weakly_typed,
        "cache_path": Path(timing_cache)
        if timing_cache
        else default_timing_cache(gpu, trt_version),
    }
    typing = "weakly typed" if weakly_typed else "strongly typed"
    with Steps(
        f"TensorRT {trt_version} engines ({precision}, {typing}) on {gpu['name']}",
        total=len(manifest["graphs"]),
    ) as bar:
        for name, g in list(manifest["graphs"].items()):
            built = _build_graph(trt, target, name, g, job)
            if built is not None:
                manifest = _record_engine(target, name, *built)
            bar.advance(name)
    return manifest


def _write_manifest_atomic(directory: Path, manifest: dict) -> None:
    atomic_write_bytes(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def find_engine(manifest_graph: Mapping, precision: str) -> list[dict]:
    """Engine entries of one manifest graph at ``precision`` (newest last)."""
    return [
        e
        for e in manifest_graph.get("engines", []) or []
        if isinstance(e, dict) and e.get("key", {}).get("precision") == precision
    ]

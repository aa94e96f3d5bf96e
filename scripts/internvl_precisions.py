"""InternVL export precisions on a large preset (issue 25): export each precision in its own
process (peak RSS = that process's high-water mark, from the manifest and ``/usr/bin/time -v``),
then time the LLM's cached decoder step on onnxruntime CPU at a realistic cache length — a
prefill of one tile's image tokens + the caption prompt (287 tokens on InternVL2-1B), then
``--steps`` cached steps fed the table rows of the argmax token — at 1 and 2 threads, median
over ``--runs`` runs of each run's median step. Preset weights are **random**: speed and
memory only, not accuracy of a trained model.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/internvl_precisions.py --preset internvl2-1b \\
        --precisions fp32,int8-cpu,int4 --work /tmp/ivl --json results/internvl-1b-precisions.json

``--bench-only`` reuses the artifacts under ``--work``; ``--export-only`` skips the timing.
``--variants`` quantizes the fp32 artifact's decoder in other int4 settings (block 128,
asymmetric blocks, lm_head at 4-bit) and times them the same way — how the plan's choice was
made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def export_one(preset: str, precision: str, out: Path) -> None:
    """(child process) export ``preset`` at ``precision`` into ``out``."""
    from toolkit.export.internvl.plan import build_plan
    from toolkit.export.onnx import export_plan
    from toolkit.models.internvl.loading import load_model

    loaded = load_model(preset=preset)
    export_plan(build_plan(loaded), precision, out, force=True, release=loaded.release)


def run_export(preset: str, precision: str, out: Path) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--child-export", precision,
           "--preset", preset, "--out", str(out)]
    log = out.with_name(out.name + ".log")  # the export's progress, readable while it runs
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stderr=f, text=True)
    wall = time.perf_counter() - t0
    err = log.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    if proc.returncode != 0:
        tail = [ln for ln in err.splitlines() if ln.strip()][-25:]
        print("\n".join(tail), file=sys.stderr)
        return {"precision": precision, "ok": False, "wall_s": round(wall, 1),
                "time_v_peak_rss_gb": round(int(rss.group(1)) * 1024 / 1e9, 2) if rss else None}
    manifest = json.loads((out / "manifest.json").read_text())
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    dec = manifest["graphs"]["decoder"]
    return {"precision": precision, "ok": True, "wall_s": round(wall, 1),
            "export_seconds": manifest["export_seconds"],
            "manifest_peak_rss_gb": manifest["export_peak_rss_gb"],
            "time_v_peak_rss_gb": round(int(rss.group(1)) * 1024 / 1e9, 2) if rss else None,
            "artifact_gb": round(size / 1e9, 3),
            "decoder_gb": round((dec["bytes"] + sum(d["bytes"] for d in dec["data_files"]))
                                / 1e9, 3),
            "validation": {g: {o: {"rel_l2": m["rel_l2"], "cosine": m["cosine"]}
                               for o, m in outs.items() if o in ("logits", "image_embeds")}
                           for g, outs in manifest["parity"]["graphs"].items()},
            "decoder_quantization": dec.get("quantization")}


def step_feeds(cfg: dict, table: np.ndarray, text_tokens: int, seed: int = 0) -> dict:
    """A prefill of one tile's image tokens + ``text_tokens`` prompt tokens, empty cache."""
    rng = np.random.default_rng(seed)
    n_img = cfg["tokens_per_tile"]
    ids = rng.integers(6, table.shape[0], size=text_tokens)
    img = rng.standard_normal((n_img, table.shape[1])).astype(np.float32) * table.std()
    embeds = np.concatenate([table[ids[:14]], img, table[ids[14:]]])[None].astype(np.float32)
    past = {f"past_{k}_{i}": np.zeros((1, cfg["kv_heads"], 0, cfg["head_dim"]), np.float32)
            for i in range(cfg["layers"]) for k in ("key", "value")}
    return {"inputs_embeds": embeds, **past}


PREFILL_LOGITS: dict = {}


def time_decoder(artifact: Path, threads: int, runs: int, steps: int, text_tokens: int) -> dict:
    from toolkit.runtime.session import OrtSession

    manifest = json.loads((artifact / "manifest.json").read_text())
    cfg = manifest["model_config"]
    table = np.load(artifact / cfg["embed_table"], allow_pickle=False, mmap_mode="r")
    sess = OrtSession(artifact / manifest["graphs"]["decoder"]["file"], threads=threads)
    per_run, prefill = [], []
    for r in range(runs + 1):                       # run 0: warm-up
        feeds = step_feeds(cfg, table, text_tokens)
        t0 = time.perf_counter()
        out = sess.run(feeds)
        t_pre = (time.perf_counter() - t0) * 1e3
        first = out["logits"]
        times = []
        for _ in range(steps):
            nxt = np.argmax(out["logits"], axis=-1)
            feeds = {"inputs_embeds": np.asarray(table[nxt])[:, None].astype(np.float32),
                     **{k.replace("present_", "past_", 1): v for k, v in out.items()
                        if k != "logits"}}
            t0 = time.perf_counter()
            out = sess.run(feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        if r == 0:
            PREFILL_LOGITS[str(artifact)] = first
        if r:
            per_run.append(statistics.median(times))
            prefill.append(t_pre)
    cache = feeds["past_key_0"].shape[2]
    return {"threads": threads, "ms_per_token": round(statistics.median(per_run), 2),
            "ms_per_token_runs": [round(x, 2) for x in per_run],
            "prefill_ms": round(statistics.median(prefill), 1),
            "prompt_tokens": cfg["tokens_per_tile"] + text_tokens,
            "cache_at_last_step": int(cache), "steps": steps, "runs": runs}


# the plan's int4 is b32-sym-lm8; "int8-cpu" is the int8-cpu export's decoder converter
# (8-bit blockwise MatMulNBits) applied to the fp32 artifact's decoder: the same graph
VARIANTS = {"int8-cpu": None, "int4-plan-b32-sym-lm8": (32, True, ("lm_head",)),
            "b128-sym-lm8": (128, True, ("lm_head",)),
            "b32-asym-lm8": (32, False, ("lm_head",)), "b32-sym-lm4": (32, True, ())}


def make_variant(fp32: Path, name: str, where: Path) -> Path:
    """An artifact-like folder: the fp32 artifact's manifest and table, the decoder quantized
    with ``VARIANTS[name]`` (block size, symmetric, 8-bit layers)."""
    import dataclasses

    from toolkit.export import precision as prec
    from toolkit.export.spec import GraphSpec

    out = where / f"variant-{name}"
    if (out / "manifest.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((fp32 / "manifest.json").read_text())
    table = manifest["model_config"]["embed_table"]
    if not (out / table).exists():
        (out / table).symlink_to((fp32 / table).resolve())
    spec = GraphSpec(name="decoder", module=None, input_names=[], output_names=[],
                     dynamic_axes={}, example_inputs=tuple)
    src = fp32 / manifest["graphs"]["decoder"]["file"]
    if VARIANTS[name] is None:
        info = prec.quantize_cpu_int8(src, out / "decoder.onnx", spec, [], "blockwise")
    else:
        bs, sym, eight = VARIANTS[name]
        spec = dataclasses.replace(spec, int4_scheme="nbits", int4_block_size=bs,
                                   int4_symmetric=sym, int4_8bit_layers=eight)
        info = prec.quantize_int4(src, out / "decoder.onnx", spec, [])
    manifest["graphs"] = {"decoder": {"file": "decoder.onnx", **info}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def run_variants(a, report: dict) -> None:
    from toolkit.core.parity import cosine, rel_l2

    var = report.setdefault("int4_variants", {})
    fp32 = str(a.work / f"{a.preset}-fp32")
    for name in VARIANTS:
        art = make_variant(a.work / f"{a.preset}-fp32", name, a.work)
        size = sum(f.stat().st_size for f in art.iterdir() if f.name.startswith("decoder"))
        main = name in ("int8-cpu", "int4-plan-b32-sym-lm8")
        threads = a.threads if main else a.variant_threads or a.threads
        for t in (int(x) for x in threads.split(",")):
            r = time_decoder(art, t, a.runs, a.steps, a.text_tokens)
            got, ref = PREFILL_LOGITS.get(str(art)), PREFILL_LOGITS.get(fp32)
            err = ({"prefill_logits_rel_l2_vs_fp32_onnx": round(float(rel_l2(got, ref)), 4),
                    "prefill_logits_cosine": round(float(cosine(got, ref)), 5)}
                   if got is not None and ref is not None else {})
            var[f"{name}@{t}"] = {"variant": name, "decoder_gb": round(size / 1e9, 3), **r, **err}
            print(json.dumps(var[f"{name}@{t}"]), flush=True)
            if a.json:
                a.json.write_text(json.dumps(report, indent=1))


def print_table(report: dict) -> None:
    bench, exports = report.get("decoder_step", {}), report.get("exports", {})
    rows = [(r["precision"], r, exports.get(r["precision"], {})) for r in bench.values()]
    rows += [(f"{r['variant']} (derived)", r, {"decoder_gb": r["decoder_gb"]})
             for r in report.get("int4_variants", {}).values()]
    print(f"\n{report['preset']} ({report['weights']}), decoder step on onnxruntime CPU, "
          "prefill + cached steps")
    print(f"{'form':<24} {'threads':>7} {'ms/token':>9} {'fp32/this':>9} {'prefill ms':>10} "
          f"{'export peak RSS GB':>18} {'decoder GB':>10}")
    for name, r, e in rows:
        base = bench.get(f"fp32@{r['threads']}")
        ratio = base["ms_per_token"] / r["ms_per_token"] if base else float("nan")
        print(f"{name:<24} {r['threads']:>7} {r['ms_per_token']:>9.2f} {ratio:>8.2f}x "
              f"{r['prefill_ms']:>10.1f} {str(e.get('time_v_peak_rss_gb', '-')):>18} "
              f"{str(e.get('decoder_gb')):>10}")


def machine() -> dict:
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
        except OSError:
            return None
    model = sh("lscpu | grep 'Model name' | sed 's/.*: *//'")
    return {"cpu": model, "flags_vnni": "avx512_vnni" in (sh("grep -m1 flags /proc/cpuinfo") or "")
            or "avx_vnni" in (sh("grep -m1 flags /proc/cpuinfo") or ""),
            "nproc": os.cpu_count(), "uptime": sh("uptime"), "free_g": sh("free -g"),
            "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="internvl2-1b")
    ap.add_argument("--precisions", default="fp32,int8-cpu,int4")
    ap.add_argument("--work", type=Path, default=Path("/tmp/internvl-precisions"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--text-tokens", type=int, default=31)   # InternVL2-1B's prompt: 287 − 256
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--variant-threads")
    ap.add_argument("--child-export")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.child_export:
        export_one(a.preset, a.child_export, a.out)
        return
    precisions = a.precisions.split(",")
    report = json.loads(a.json.read_text()) if a.json and a.json.exists() else {}
    report.update({"preset": a.preset, "weights": "random (preset init): speed/memory only",
                   "machine": machine()})
    exports = report.setdefault("exports", {})
    bench = report.setdefault("decoder_step", {})
    for p in precisions:
        art = a.work / f"{a.preset}-{p}"
        if not a.bench_only:
            print(f"== export {p} → {art}", flush=True)
            exports[p] = run_export(a.preset, p, art)
            print(json.dumps(exports[p]), flush=True)
            if a.json:
                a.json.write_text(json.dumps(report, indent=1))
    if not a.export_only:
        for p in precisions:
            art = a.work / f"{a.preset}-{p}"
            if not (art / "manifest.json").exists():
                continue
            for t in (int(x) for x in a.threads.split(",")):
                r = time_decoder(art, t, a.runs, a.steps, a.text_tokens)
                bench[f"{p}@{t}"] = {"precision": p, **r}
                print(json.dumps(bench[f"{p}@{t}"]), flush=True)
                if a.json:
                    a.json.write_text(json.dumps(report, indent=1))
    if a.variants:
        run_variants(a, report)
    print_table(report)
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""One benchmark harness for every family: cases × shapes, a child process per case, warm-up and
timing, peak memory, device figures, records of one schema, one table, one PNG.

A family brings a ``BenchSpec`` (``bench/<family>.py``): its workload (the shapes it sweeps and
the items of each), the work timed per item, the figures it derives (RTF, quality against the
reference case), its extra columns, notes and headline plot. Everything else is here:

1. options are checked once (backends, precisions, ``--runs``/``--warmup``/``--limit``);
2. the model is loaded once and exported per precision into the work directory (reused while
   weights, precision and export revision match);
3. every backend × precision case runs in its own spawned process (so peak RSS is per case):
   the reference cases first (``torch`` fp32, plus any the family adds), each item ``warmup``
   untimed + ``runs`` timed passes (or, in ``cycle`` mode, ``max(runs, items)`` calls cycling
   over the items);
4. figures, ratios against the reference cases, the table, the records (checked against the
   schema when written) and the plot.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape

from ..core.errors import ToolkitError
from ..core.hardware import environment
from ..core.precisions import (
    EXPORT_PRECISIONS,
    FAMILY_PRECISIONS,
    PRECISIONS,
    check_family_precision,
)
from ..core.progress import Steps, console
from ..export.artifact import is_current
from ..export.manifest import load_manifest
from ..runtime.backends import check_backend
from ..runtime.from_model import artifact_for, artifact_path
from ..runtime.torch_session import cuda_available
from .isolate import CaseFailed, run_isolated
from .plots import Panel, write_plot
from .records import record_paths, write_records
from .report import print_table
from .timing import percentiles

DEFAULT_BACKENDS = ("torch", "ort")
REFERENCE = ("torch", "fp32")
# what each backend can run (torch: the fp32 reference; fp16 too where a spec allows it on CUDA)
# (int4 and other family-only precisions: onnxruntime CPU, where the family offers them)
BACKEND_PRECISIONS = {"torch": ("fp32",), "ort": EXPORT_PRECISIONS,
                      "ort-cuda": ("fp32", "fp16", "int8"), "ort-trt": ("fp32", "fp16", "int8"),
                      "trt": ("fp32", "fp16", "int8")}


@dataclass
class Workload:
    """One point of a family's sweep — a step count, a clip shape, a data set — and the items
    timed at it (a record's ``shape`` is its label)."""

    label: str                                   # the record's ``shape``
    items: list                                  # what ``work`` gets, one per timed call
    fields: dict = field(default_factory=dict)   # extra record fields (e.g. steps, frames)
    info: dict = field(default_factory=dict)     # what ``figures`` needs (durations, FLOPs)


@dataclass
class Case:
    """What a child process runs: one backend × precision over every workload."""

    family: Any                  # the registry's Family (opens the pipeline in the child)
    backend: str
    precision: str
    artifact: str | None
    load_args: dict              # checkpoint / preset / seed, to load the model in the child
    workloads: list[Workload]
    runs: int
    warmup: int
    options: dict                # the family's own options
    reference: dict | None = None  # the reference case's outputs per workload label


@dataclass
class BenchOptions:
    """What ``toolkit bench`` takes (the family's own options in ``family_options``)."""

    checkpoint: str | None = None
    preset: str | None = None
    backends: list[str] | None = None       # default: the spec's default_backends()
    precisions: list[str] | None = None     # default: every precision
    data: Path | None = None
    runs: int = 5
    warmup: int = 1
    out: Path | None = None                 # default: the spec's default_out
    seed: int = 0
    limit: int | None = None
    workdir: Path | None = None             # where the exports are cached (artifacts/bench)
    isolate: bool = True                    # one spawned process per case
    family_options: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.runs < 1:
            raise ToolkitError(f"--runs must be at least 1 (got {self.runs})")
        if self.warmup < 0:
            raise ToolkitError(f"--warmup must be 0 or more (got {self.warmup})")
        if self.limit is not None and self.limit < 1:
            raise ToolkitError(f"--limit must be at least 1 (got {self.limit})")


class BenchSpec:
    """What a family declares; the harness calls these. Subclasses set the class attributes."""

    family: str = ""
    mode: str = "passes"                     # "passes" or "cycle" (see the module docstring)
    extra_backends: dict[str, tuple[str, ...]] = {}   # family-only backends (whisper: hf)
    references: tuple[tuple[str, str], ...] = (REFERENCE,)   # always run, in this order
    speed_key: str = "latency_ms_p50"        # lower is faster; ratios are computed on it
    ratios: tuple[tuple[str, str], ...] = (REFERENCE,)       # speedup_vs_<b>_<p> columns
    torch_fp16_on_cuda: bool = False         # also run torch fp16 when torch sees a GPU
    fields: tuple[str, ...] = ()             # record fields beyond COMMON_FIELDS
    columns: Sequence[tuple[str, str, str]] = ()      # (header, key, format) after the timing
    quality_columns: Sequence[tuple[str, str, str]] = ()
    quality_header: str = "quality"
    quality_format: str = ".4g"
    plot_panels: Sequence[Panel] = ()
    plot_x: str | None = None
    default_out: str = ""

    # -- parent ---------------------------------------------------------------------------
    def default_precisions(self) -> tuple[str, ...]:
        """What runs without --precision: every common precision and the family's own
        (``core.precisions.FAMILY_PRECISIONS``: InternVL's int4)."""
        return PRECISIONS + tuple(p for p, families in FAMILY_PRECISIONS.items()
                                  if self.family in families)

    def check_options(self, options: dict) -> dict:
        """Validate and normalise the family's own options (``--steps`` …)."""
        return options

    def workloads(self, family, loaded, data, limit: int | None,
                  options: dict) -> list[Workload]:
        raise NotImplementedError

    def figures(self, shape: Workload, result: dict, reference: dict, options: dict) -> dict:
        """Family fields of one record: must include ``rtf``, ``quality_metric``,
        ``quality_value`` and ``quality_reference``."""
        raise NotImplementedError

    def notes(self, records: list[dict], loaded, shapes: list[Workload],
              options: dict, env: dict) -> list[str]:
        return []

    def default_backends(self) -> tuple[str, ...]:
        """What runs when ``--backend`` is not given."""
        return DEFAULT_BACKENDS

    def check_backends(self, backends: list[str]) -> None:
        """Refuse a family backend that cannot run here (e.g. a peer package not installed)."""

    def reference_cases(self, options: dict) -> tuple[tuple[str, str], ...]:
        """The cases always run first (``references`` unless a mode changes them)."""
        return self.references

    def skip_reason(self, backend: str, precision: str, loaded,
                    options: dict) -> str | None:
        """Why a case cannot run on this model/mode (it is listed under "not run"), or None."""
        return None

    def prepare(self, loaded, cases: list[tuple[str, str]], workdir: Path,
                options: dict) -> None:
        """Parent-side work before the cases run (e.g. convert weights for a peer runtime)."""

    def after_cases(self) -> None:
        """Called once every case has run, before the figures (e.g. re-measure a peak)."""

    def finish(self, records: list[dict]) -> list[str]:
        """Lines printed after the table (summaries against targets)."""
        return []

    # -- child ----------------------------------------------------------------------------
    def open(self, case: Case):
        """The runner of a case: the family pipeline on the artifact or the model."""
        if case.artifact:
            return case.family.open_pipeline(artifact=case.artifact, backend=case.backend)
        return case.family.open_pipeline(**case.load_args, backend=case.backend,
                                         precision=case.precision)

    def load_items(self, shape: Workload, case: Case) -> list:
        """Items made ready before timing (e.g. audio decoded from files)."""
        return shape.items

    def work(self, runner, item, shape: Workload, case: Case) -> tuple[Any, dict]:
        """The timed unit: ``(output, extra timings {key: [ms, ...]})``."""
        raise NotImplementedError

    def after(self, runner, items: list, shape: Workload, case: Case, outputs: list) -> dict:
        """Untimed child-side figures (e.g. teacher-forced agreement with the reference)."""
        return {}


# ------------------------------------------------------------------------------------------
# child
# ------------------------------------------------------------------------------------------

def _device_stats(runner) -> dict:
    stats = [s.device_stats() for s in getattr(runner, "sessions", [])]
    out: dict = {}
    ms = [st["device_ms"] for st in stats if st.get("device_ms") is not None]
    if ms:
        out["device_ms"] = float(sum(ms))
    peaks = [st["device_peak_mb"] for st in stats if st.get("device_peak_mb") is not None]
    if peaks:  # sessions of a pipeline are alive together: their sum
        out["device_peak_mb"] = float(sum(peaks))
        out["device_memory"] = next(st["device_memory"] for st in stats if st.get("device_memory"))
    return out


def _timed(spec: BenchSpec, runner, item, shape: Workload, case: Case):
    for s in getattr(runner, "sessions", []):
        s.reset_device_stats()
    t0 = time.perf_counter()
    output, extras = spec.work(runner, item, shape, case)
    ms = (time.perf_counter() - t0) * 1e3
    return output, extras, ms, _device_stats(runner)


def measure(spec: BenchSpec, runner, items: list, shape: Workload, case: Case) -> dict:
    """Warm-up and timed calls over ``items``; samples, passes, extras and first outputs."""
    n = len(items)
    samples: list[list[float]] = [[] for _ in range(n)]
    passes: list[float] = []
    extras: dict[str, list] = {}
    device: dict[str, list] = {}
    outputs: list = [None] * n

    def keep(k, output, ex, ms, dev):
        samples[k].append(ms)
        for key, v in ex.items():
            extras.setdefault(key, []).extend(v)
        for key, v in dev.items():
            device.setdefault(key, []).append(v)
        if outputs[k] is None:
            outputs[k] = output

    if spec.mode == "cycle":
        for i in range(case.warmup + max(case.runs, n)):
            k = i % n
            output, ex, ms, dev = _timed(spec, runner, items[k], shape, case)
            if i >= case.warmup:
                keep(k, output, ex, ms, dev)
    else:
        for r in range(case.warmup + case.runs):
            total = 0.0
            for k, item in enumerate(items):
                output, ex, ms, dev = _timed(spec, runner, item, shape, case)
                total += ms
                if r >= case.warmup:
                    keep(k, output, ex, ms, dev)
            if r >= case.warmup:
                passes.append(total)
    runs = max((len(s) for s in samples), default=0)
    flat = [s[r] for r in range(runs) for s in samples if r < len(s)]  # run-major
    return {"samples": samples, "latency_ms": flat, "pass_ms": passes, "extras": extras,
            "device": device, "outputs": outputs}


def run_case(spec: BenchSpec, case: Case) -> dict:
    """Everything one case measures, per shape label (runs in the child process)."""
    runner = spec.open(case)
    results = {}
    try:
        for shape in case.workloads:
            items = spec.load_items(shape, case)
            res = measure(spec, runner, items, shape, case)
            res["after"] = spec.after(runner, items, shape, case, res["outputs"])
            results[shape.label] = res
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()
    return results


# ------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------

def plan_cases(spec: BenchSpec, backends: Sequence[str], precisions: Sequence[str],
               has_cuda: bool, references: Sequence[tuple[str, str]] | None = None
               ) -> tuple[list[tuple[str, str]], list[str]]:
    """(cases in run order — references first —, skipped "backend/precision (why)")."""
    references = list(spec.references if references is None else references)
    wanted = references + [(b, p) for b in backends for p in precisions
                           if (b, p) not in references]
    cases, skipped = [], {}
    for b, p in wanted:
        allowed = spec.extra_backends.get(b) or BACKEND_PRECISIONS[b]
        if b == "torch" and p == "fp16" and has_cuda and spec.torch_fp16_on_cuda:
            allowed = ("fp32", "fp16")
        if p not in allowed:
            why = ("PyTorch runs the fp32 reference here; fp16/int8 run on onnxruntime/TensorRT"
                   if b == "torch" else f"{b} does not run it")
            skipped.setdefault(why, []).append(f"{b}/{p}")
            continue
        cases.append((b, p))
    return cases, [f"{', '.join(which)} ({why})" for why, which in skipped.items()]


def run_bench(family, opts: BenchOptions) -> list[dict]:
    """Every backend × precision of ``family`` on the same inputs: the records, written, with
    the table and the plot."""
    spec = family.bench_spec
    backends, precisions, options = _checked(spec, opts)
    loaded = family.load_model(opts.checkpoint, opts.preset, opts.seed)
    if loaded.random_init:
        console.print(f"[yellow]note:[/] {loaded.weights} — timings are real; quality columns "
                      "compare backends, not model quality")
    workdir = Path(opts.workdir or Path("artifacts") / "bench")
    workloads = spec.workloads(family, loaded, opts.data, opts.limit, options)
    cases, skipped = _plan(spec, backends, precisions, loaded, options)
    workdir.mkdir(parents=True, exist_ok=True)  # only once every input has been checked
    spec.prepare(loaded, cases, workdir, options)
    load_args = {"checkpoint": opts.checkpoint, "preset": opts.preset, "seed": opts.seed}
    artifacts = _exports(family, spec, loaded, cases, load_args, workdir, opts.isolate)
    outcome = _run_cases(family, spec, cases, artifacts, load_args, workloads, opts, options)
    spec.after_cases()
    run = _Run(spec, loaded, workloads, opts, options, environment())
    records = _records(run, outcome)
    _report(run, records, outcome, skipped)
    return records


@dataclass
class _Run:
    """What every record and the report of one bench run share."""

    spec: BenchSpec
    loaded: Any
    workloads: list[Workload]
    opts: BenchOptions
    options: dict            # the family's own options
    env: dict


@dataclass
class _Outcome:
    """What the cases gave: per (backend, precision) their results, peak RSS, or why they
    failed; and the artifact each precision ran."""

    results: dict
    peaks: dict
    failed: dict
    artifacts: dict


def _checked(spec: BenchSpec, opts: BenchOptions) -> tuple[list[str], list[str], dict]:
    """(backends, precisions, the family's options), each checked."""
    backends = [b if b in spec.extra_backends else check_backend(b)
                for b in (opts.backends or spec.default_backends())]
    spec.check_backends(backends)
    precisions = [p if p == "bf16" else check_family_precision(spec.family, p)
                  for p in (opts.precisions or spec.default_precisions())]
    opts.check()
    record_paths(opts.out or spec.default_out)      # before minutes of benchmarking
    return backends, precisions, spec.check_options(dict(opts.family_options))


def _plan(spec: BenchSpec, backends, precisions, loaded, options
          ) -> tuple[list[tuple[str, str]], list[str]]:
    """The cases that run, and the ones left out with why."""
    cases, skipped = plan_cases(spec, backends, precisions, cuda_available(),
                                spec.reference_cases(options))
    why_not: dict[str, list[str]] = {}
    for b, p in list(cases):
        why = spec.skip_reason(b, p, loaded, options)
        if why:
            cases.remove((b, p))
            why_not.setdefault(why, []).append(f"{b}/{p}")
    return cases, skipped + [f"{', '.join(which)} ({why})" for why, which in why_not.items()]


def _runs_artifact(spec: BenchSpec, backend: str) -> bool:
    return backend != "torch" and backend not in spec.extra_backends


def _exports(family, spec, loaded, cases, load_args: dict, workdir: Path,
             isolate: bool) -> dict[str, str]:
    """{precision: artifact} for the precisions an exported backend runs."""
    plan = family.build_plan(loaded)
    exported = sorted({p for b, p in cases if _runs_artifact(spec, b)})
    if isolate:  # every case loads its own copy: the exports' memory is theirs alone
        loaded.release()
    return {p: _artifact(family, loaded, plan, load_args, p, workdir, isolate) for p in exported}


def _run_cases(family, spec, cases, artifacts, load_args, workloads, opts: BenchOptions,
               options: dict) -> _Outcome:
    """Each case in its own process."""
    results: dict[tuple[str, str], dict] = {}
    peaks: dict[tuple[str, str], float] = {}
    failed: dict[tuple[str, str], str] = {}
    with Steps(f"bench {spec.family}", total=len(cases)) as bar:
        for b, p in cases:
            ref = results.get(REFERENCE)
            case = Case(family, b, p, artifacts[p] if _runs_artifact(spec, b) else None,
                        load_args, workloads, opts.runs, opts.warmup, options,
                        reference={k: v["outputs"] for k, v in ref.items()} if ref else None)
            try:
                res, peak = run_isolated(run_case, spec, case, isolate=opts.isolate)
            except CaseFailed as exc:
                if (b, p) == REFERENCE:
                    raise ToolkitError(f"the reference case ({b} {p}) failed, so nothing can be "
                                       f"compared: {exc}") from None
                failed[(b, p)] = str(exc)
                console.print(f"[red]✗[/] {b} {p}: {escape(str(exc))}; going on with the rest")
                bar.advance(f"{b} {p} failed")
                continue
            results[(b, p)], peaks[(b, p)] = res, peak
            bar.advance(f"{b} {p}")
    return _Outcome(results, peaks, failed, artifacts)


def _records(run: _Run, outcome: _Outcome) -> list[dict]:
    """One record per case × workload (failed cases: a record that says why), with ratios."""
    spec, loaded, opts, env = run.spec, run.loaded, run.opts, run.env
    artifacts = outcome.artifacts
    export_figures = {p: _export_figures(a) for p, a in artifacts.items()}

    def identity(b: str, p: str, shape: Workload) -> dict:
        """What a record is about: model, case, workload, weights, settings."""
        return {"model": f"{spec.family}-{loaded.name}", "family": spec.family, "backend": b,
                "precision": p, "shape": shape.label, **shape.fields, "weights": loaded.weights,
                "random_init": loaded.random_init, "source": loaded.source,
                "artifact": artifacts.get(p) if _runs_artifact(spec, b) else None,
                "runs": opts.runs, "warmup": opts.warmup}

    records = []
    for shape in run.workloads:
        ref = outcome.results[REFERENCE][shape.label]
        for (b, p), res in outcome.results.items():
            r = res[shape.label]
            records.append({
                **identity(b, p, shape),
                **percentiles(r["latency_ms"]),
                "latency_ms_samples": [round(x, 3) for x in r["latency_ms"]],
                "peak_rss_mb": round(outcome.peaks[(b, p)], 1),
                **(export_figures.get(p, {}) if _runs_artifact(spec, b) else {}),
                **_device_fields(r["device"]),
                **spec.figures(shape, r, ref, run.options),
                "environment": env, "error": None,
            })
        for (b, p), why in outcome.failed.items():  # the record says which failed and why
            records.append({
                **identity(b, p, shape), **percentiles([]), "latency_ms_samples": [],
                "peak_rss_mb": None, "rtf": None, "quality_metric": None, "quality_value": None,
                "quality_reference": None, "environment": env, "error": why})
    _ratios(spec, records)
    return records


def _report(run: _Run, records: list[dict], outcome: _Outcome, skipped: list[str]) -> None:
    """The records written (JSON + CSV), the table on stdout, the PNG; exit 2 if cases failed."""
    spec, loaded, opts, failed = run.spec, run.loaded, run.opts, outcome.failed
    out = Path(opts.out or spec.default_out)
    jpath, cpath = write_records(records, out, spec.fields)
    notes = spec.notes(records, loaded, run.workloads, run.options, run.env) + _common_notes(
        spec, records, opts.runs, opts.warmup, run.env, skipped)
    notes += [f"FAILED {b} {p}: {why}" for (b, p), why in failed.items()]
    title = f"{spec.family}-{loaded.name}" + (" (random init)" if loaded.random_init else "")
    table = Console(width=260, highlight=False)  # the result goes to stdout, progress to stderr
    print_table(records, _columns(spec, records), f"{title} bench", notes, console=table)
    for line in spec.finish(records):
        table.print(line)
    png = write_plot(records, out.with_suffix(".png"), title, spec.plot_panels, x=spec.plot_x)
    console.print(f"[green]✓[/] records: {escape(str(jpath))} and {escape(str(cpath))}"
                  + (f"; plot: {escape(str(png))}" if png else ""))
    if failed:  # the records are written; the exit code still says that cases failed
        raise ToolkitError(f"{len(failed)} case(s) failed ("
                           + "; ".join(f"{b} {p}: {why}" for (b, p), why in failed.items())
                           + f"); the other cases are in {jpath}")


def _export_child(family, load_args: dict, precision: str, workdir) -> str:
    loaded = family.load_model(load_args["checkpoint"], load_args["preset"], load_args["seed"])
    return str(artifact_for(loaded, family.build_plan(loaded), precision, workdir, release=True))


def _artifact(family, loaded, plan, load_args: dict, precision: str, workdir,
              isolate: bool) -> str:
    """The artifact a precision's rows run: reused when current, else exported — in its own
    process when cases are isolated, so its time and peak memory are the export's alone."""
    if not isolate:
        return str(artifact_for(loaded, plan, precision, workdir))
    out = artifact_path(loaded, precision, workdir)
    if is_current(out, loaded.family, loaded.source, precision, plan.revision):
        console.print(f"[dim]reusing {escape(str(out))} ({precision})[/]")  # checked once
        return str(out)
    try:
        path, _peak = run_isolated(_export_child, family, load_args, precision, workdir)
    except CaseFailed as exc:
        # a killed export never ran its clean-up: its temporary directory is ours to remove
        for partial in out.parent.glob(f".{out.name}.partial-*"):
            shutil.rmtree(partial, ignore_errors=True)
        why = str(exc).removeprefix("benchmark case failed: ").strip().splitlines()[0]
        raise ToolkitError(f"exporting {loaded.family} at {precision} for the bench failed: "
                           f"{why}") from None
    return path


def _export_figures(artifact: str) -> dict:
    """How long the artifact's export took and its peak memory (from its manifest)."""
    try:
        m = load_manifest(artifact, verify_hashes=False)
    except ToolkitError:
        return {}
    return {"export_seconds": m.get("export_seconds"),
            "export_peak_rss_gb": m.get("export_peak_rss_gb")}


def _device_fields(device: dict) -> dict:
    out: dict = {}
    if device.get("device_ms"):
        out.update(percentiles(device["device_ms"], "device_ms"))
        out["device_ms_samples"] = [round(x, 3) for x in device["device_ms"]]
    if device.get("device_peak_mb"):
        out["device_peak_mb"] = round(max(device["device_peak_mb"]), 1)
        out["device_memory_counts"] = device["device_memory"][0]
    return out


def _ratios(spec: BenchSpec, records: list[dict]) -> None:
    key = spec.speed_key
    for r in records:
        same = {(x["backend"], x["precision"]): x for x in records if x["shape"] == r["shape"]}
        for b, p in spec.ratios:
            base = same.get((b, p))
            r[f"speedup_vs_{b}_{p}"] = (base[key] / r[key]
                                        if base and base.get(key) and r.get(key) else None)


def _columns(spec: BenchSpec, records: list[dict]) -> list[tuple[str, str, str]]:
    cols = [("backend", "backend", ""), ("precision", "precision", ""), ("shape", "shape", ""),
            ("p50 ms", "latency_ms_p50", ".1f"), ("p90", "latency_ms_p90", ".1f"),
            ("p99", "latency_ms_p99", ".1f"), *spec.columns, ("RTF", "rtf", ".4f")]
    present = {(r["backend"], r["precision"]) for r in records if r.get("error") is None}
    cols += [(f"× {b} {p}", f"speedup_vs_{b}_{p}", ".2f") for b, p in spec.ratios
             if (b, p) in present]
    cols.append(("peak RSS MB", "peak_rss_mb", ".0f"))
    if any(r.get("export_seconds") is not None for r in records):
        cols += [("export s", "export_seconds", ".0f"),
                 ("export peak GB", "export_peak_rss_gb", ".1f")]
    if any("device_ms_p50" in r for r in records):
        cols += [("device ms p50", "device_ms_p50", ".1f"), ("dev p90", "device_ms_p90", ".1f"),
                 ("dev p99", "device_ms_p99", ".1f")]
    if any("device_peak_mb" in r for r in records):
        cols.append(("device peak MB", "device_peak_mb", ".0f"))
    cols.append((spec.quality_header, "quality_value", spec.quality_format))
    # a family column that no record of this run fills (e.g. WER without references) is left out
    cols += [c for c in spec.quality_columns if any(r.get(c[1]) is not None for r in records)]
    return cols


def _common_notes(spec, records, runs, warmup, env, skipped) -> list[str]:
    how = (f"{runs} timed passes over the items after {warmup} warm-up pass(es)"
           if spec.mode == "passes" else
           f"max({runs}, items) timed calls cycling over the items after {warmup} warm-up")
    notes = [f"p50/p90/p99 = latency of one item over items × runs; {how}; {env['threads']} "
             "threads; peak RSS = peak resident memory of the process that ran the case (one "
             "spawned process per case)",
             "× X = " + spec.speed_key + "(X) / " + spec.speed_key + "(this row), same shape"]
    if any("device_ms_p50" in r for r in records):
        notes.append("device ms = device compute time per item (CUDA events around each "
                     "engine/module call, as trtexec's GPU Compute Time); — = the backend "
                     "cannot time the device (ort-cuda/ort-trt, CPU)")
    if any("device_peak_mb" in r for r in records):
        kinds = sorted({f"{r['backend']}: {r['device_memory_counts']}" for r in records
                        if r.get("device_memory_counts")})
        notes.append("device peak MB counts " + "; ".join(kinds))
    if skipped:
        notes.append("not run: " + "; ".join(skipped))
    return notes


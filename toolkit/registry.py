"""Model families: each one declared once, here.

A ``Family`` names, as ``"module:attribute"`` references, everything the commands, the bench
harness and the server need of it — how to load it, its export plan, the graphs of its
artifacts and the pipeline built over them, its bench spec, its own CLI commands, its training
and its serving routes. Nothing else in the package lists the families: the CLI, the contract
tests and the server iterate over ``FAMILIES``, and the layers below receive the ``Family``
object they work for (``run_bench(family, …)``, ``Service(models=[…])``) instead of importing
this module.

This is the one module that loads the package's own modules by name, on first use
(``resolve``): ``toolkit --help``, ``doctor`` and every one-line error stay fast, a Whisper run
never imports the video stack, and running an artifact never imports PyTorch (the model-loading
and export references are resolved only when a model is loaded or exported).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from pathlib import PurePath
from typing import Any

from .core.errors import ToolkitError, missing_part

# What the first run of a command on the default model costs, measured on this project's 2-core
# test CPU (Intel Xeon, 2026-12): exporting tiny.en into the cache, once.
FIRST_EXPORT_S = {"fp32": 15, "int8": 50}


def resolve(ref: str, what: str | None = None) -> Any:
    """``"toolkit.x.y:name"`` → that attribute; ``"toolkit.x.y"`` → the module. A missing
    optional package (PyTorch on a runtime-only install, the server's) is a one-line error
    naming the extra to install."""
    module, _, attr = ref.partition(":")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        err = missing_part(exc, what or f"{module.removeprefix('toolkit.')}")
        if err is None:
            raise
        raise err from None
    return getattr(loaded, attr) if attr else loaded


@dataclass(frozen=True)
class Option:
    """A family's own ``toolkit bench`` option, e.g. Grad-TTS ``--steps 1,10``."""

    name: str
    help: str
    kind: str = "list"        # "list": comma list (strings); "int": one integer; "flag": on/off
    max: int | None = None    # "int": the largest value accepted


@dataclass(frozen=True)
class Family:
    """One model family. References are ``"module:attribute"`` strings (resolved lazily)."""

    name: str
    summary: str                          # one line, for help texts
    default_preset: str                   # what a preset run without --preset uses
    load: str                             # load_model(checkpoint, preset, seed) -> LoadedModel
    plan: str                             # build_plan(loaded, calib_data) -> ExportPlan;
                                          # revision.py beside it holds EXPORT_REVISION
    graphs: tuple[str, ...]               # the graphs of an artifact, by name
    pipeline: str                         # from_graphs(Graphs) -> the family's pipeline
    bench: str                            # the BenchSpec instance
    cli: str | None = None                # module of the family's own commands
    commands: tuple[tuple[str, str], ...] = ()   # (command, its one-line help) in ``cli``
    train: str | None = None              # module with TrainOptions and train(opts, family)
    serve: str | None = None              # module with SERVED: the family's served model
    parameter_count: str | None = None    # (checkpoint, preset) -> int | None, before loading
    default_model: str = ""               # the model used with no --checkpoint/--preset, if not
                                          # the default preset (whisper: trained tiny.en)
    default_source: str | None = None     # () -> (cache tag, source) of that model, without
                                          # loading it (its cached export opens without torch)
    test_preset: str = "tiny"             # the smallest preset, for the contract tests
    torch_device: str = "cpu"             # "auto": CUDA when torch sees one
    bench_options: tuple[Option, ...] = ()
    optional_graphs: tuple[str, ...] = ()  # graphs an artifact may also hold (whisper: align,
                                           # for word timestamps; marian: the shortlist decoder
                                           # of a model that ships one)

    # -- models and export ------------------------------------------------------------------
    def load_model(self, checkpoint=None, preset=None, seed: int = 0):
        return resolve(self.load, f"loading a {self.name} model")(checkpoint, preset, seed)

    def build_plan(self, loaded, calib_data=None):
        return resolve(self.plan, f"exporting {self.name}")(loaded, calib_data)

    @property
    def export_revision(self) -> int:
        return resolve(self.plan.partition(":")[0].rpartition(".")[0] + ".revision:EXPORT_REVISION")

    def count_parameters(self, checkpoint=None, preset=None) -> int | None:
        """The model's parameter count read from its config, or None if the family cannot
        tell without loading it."""
        return resolve(self.parameter_count)(checkpoint, preset) if self.parameter_count else None

    def default_tag(self, checkpoint=None, preset=None) -> str:
        """Short name of the model for folder names: preset, checkpoint folder or default."""
        return preset or (PurePath(str(checkpoint)).name if checkpoint else
                          self.default_model or self.default_preset)

    # -- runtime ----------------------------------------------------------------------------
    def open_pipeline(self, artifact=None, checkpoint=None, preset=None, loaded=None,
                      backend: str = "ort", precision: str = "fp32", seed: int = 0,
                      threads: int | None = None, device: str | None = None):
        """The family's pipeline over an artifact's graphs (no PyTorch is imported), or over a
        model (``loaded``, or loaded from ``checkpoint``/``preset``/the default): its modules
        on ``torch``, else its export, made once into the cache."""
        graphs = resolve("toolkit.runtime.graphs")
        graphs.check_backend(backend)
        if artifact is not None:
            if checkpoint is not None or preset is not None or loaded is not None:
                raise ToolkitError("give either --artifact or --checkpoint/--preset, not both")
            opened = graphs.open_artifact(artifact, self.name, backend, threads,
                                          expect=self.graphs,
                                          optional=self.optional_graphs)
        elif (cached := self._cached_default(checkpoint, preset, loaded, backend, precision)):
            opened = graphs.open_artifact(cached, self.name, backend, threads, expect=self.graphs,
                                          optional=self.optional_graphs)
        else:
            if loaded is None:
                loaded = self.load_model(checkpoint, preset, seed)
            opened = resolve("toolkit.runtime.from_model:open_model",
                             f"running a {self.name} model (not an artifact)")(
                loaded, self.build_plan, backend, precision, threads,
                device or (None if self.torch_device == "auto" else self.torch_device))
        return graphs.make_pipeline(opened, resolve(self.pipeline))

    def _cached_default(self, checkpoint, preset, loaded, backend: str, precision: str):
        """The cached export of the default model, found without loading it (no PyTorch), if
        one is current; else None (the model is loaded and exported into the cache once)."""
        if checkpoint or preset or loaded is not None or backend == "torch" \
                or not self.default_source:
            return None
        default = resolve(self.default_source)()
        if default is None:        # the default is a preset for now (internvl: random weights)
            return None
        tag, source = default
        out = resolve("toolkit.runtime.graphs:cache_root")() / f"{self.name}-{tag}-{precision}"
        current = resolve("toolkit.export.artifact:is_current")
        if current(out, self.name, source, precision, self.export_revision, verify=False):
            return out
        note = resolve("toolkit.core.progress:console").print
        took = FIRST_EXPORT_S.get(precision)
        note(f"first run: exporting the default {self.name} model ({tag}, {precision}) into "
             f"{out}, once" + (f" (about {took} s on a 2-core CPU)" if took else "")
             + "; later runs reuse it")
        return None

    # -- commands ---------------------------------------------------------------------------
    def export(self, options=None, **kwargs) -> dict:
        """``toolkit export``: ``options`` an ``ExportOptions`` (or its fields as keywords)."""
        command = resolve("toolkit.export.command")
        return command.export_model(self, options or command.ExportOptions(**kwargs))

    @property
    def bench_spec(self):
        return resolve(self.bench)

    def run_bench(self, options=None, **kwargs) -> list[dict]:
        """``toolkit bench``: ``options`` a ``BenchOptions`` (or its fields as keywords; other
        keywords are the family's own bench options)."""
        harness = resolve("toolkit.bench.harness")
        if options is None:
            known = {f.name for f in fields(harness.BenchOptions)}
            options = harness.BenchOptions(
                **{k: v for k, v in kwargs.items() if k in known},
                family_options={k: v for k, v in kwargs.items() if k not in known})
        return harness.run_bench(self, options)

    @property
    def train_module(self):
        if self.train is None:
            raise ToolkitError(f"{self.name} has no training command")
        return resolve(self.train)

    @property
    def served(self):
        """The family's served model class (``serve/routes/<family>.py: SERVED``)."""
        if self.serve is None:
            raise ToolkitError(f"{self.name} cannot be served (no serving routes)")
        return resolve(self.serve + ":SERVED")

    @property
    def cli_module(self):
        """The family's commands (``toolkit/cli/<family>.py``)."""
        return resolve(self.cli) if self.cli else None



FAMILIES = {
    "whisper": Family(
        "whisper", summary="speech recognition (OpenAI Whisper)", default_preset="tiny",
        default_model="tiny.en",
        load="toolkit.models.whisper.loading:load_model",
        parameter_count="toolkit.models.whisper.loading:parameter_count",
        plan="toolkit.export.whisper.plan:build_plan", graphs=("encoder", "decoder"),
        optional_graphs=("align",),
        pipeline="toolkit.runtime.whisper.pipeline:from_graphs",
        bench="toolkit.bench.whisper:SPEC", cli="toolkit.cli.whisper",
        commands=(("transcribe", "Transcribe audio of any length with Whisper on any backend: "
                                 "timestamped segments, beam search, temperature fallback; "
                                 "subtitles with --output-format srt/vtt."),),
        train="toolkit.train.whisper", serve="toolkit.serve.routes.whisper",
        default_source="toolkit.models.whisper.default:default_source",
        torch_device="auto",
        bench_options=(Option("tokens", "Whisper: force this many decoded tokens (default with "
                                        "random weights: 48).", kind="int"),
                       Option("beam_size", "Whisper: beams (default 1 = greedy).", kind="int",
                              max=64),
                       Option("long_form", "Whisper: join the data's clips (0.3 s apart) into "
                                           "one recording and transcribe it with timestamps, "
                                           "seeking (RTF, CER/WER, words dropped/inserted).",
                              kind="flag"))),
    "gradtts": Family(
        "gradtts", summary="text to speech (Grad-TTS)", default_preset="paper",
        load="toolkit.models.gradtts.checkpoint:load_model",
        plan="toolkit.export.gradtts.plan:build_plan", graphs=("encoder", "unet"),
        pipeline="toolkit.runtime.gradtts.pipeline:from_graphs",
        bench="toolkit.bench.gradtts:SPEC", cli="toolkit.cli.gradtts",
        commands=(("synthesize", "Text → mel (Grad-TTS, any backend) → waveform "
                                 "(Griffin-Lim)."),),
        train="toolkit.models.gradtts.train", serve="toolkit.serve.routes.gradtts",
        bench_options=(Option("steps", "Grad-TTS: comma list of ODE steps."),)),
    "svt": Family(
        "svt", summary="video embedding (SVT, TimeSformer)", default_preset="vit-base",
        load="toolkit.models.svt.checkpoint:load_model",
        plan="toolkit.export.svt.plan:build_plan", graphs=("backbone",),
        pipeline="toolkit.runtime.svt.pipeline:from_graphs",
        bench="toolkit.bench.svt:SPEC", cli="toolkit.cli.svt", train="toolkit.models.svt.train",
        commands=(("embed", "Embed videos with the SVT backbone (CLS feature), on any "
                            "backend."),),
        bench_options=(Option("frames", "SVT: comma list of clip frame counts."),
                       Option("size", "SVT: comma list of clip sizes (px)."))),
    "marian": Family(
        "marian", summary="translation (Marian: Firefox Translations, OPUS-MT)",
        default_preset="bergamot-tiny", default_model="bergamot-tiny-en-pt",
        load="toolkit.models.marian.loading:load_model",
        parameter_count="toolkit.models.marian.loading:parameter_count",
        plan="toolkit.export.marian.plan:build_plan", graphs=("encoder", "decoder"),
        optional_graphs=("decoder_shortlist",),
        pipeline="toolkit.runtime.marian.pipeline:from_graphs",
        bench="toolkit.bench.marian:SPEC", cli="toolkit.cli.marian",
        commands=(("translate", "Translate text or a file (one sentence per line) with a "
                                "Marian model on any backend: en→pt by default."),),
        serve="toolkit.serve.routes.marian",
        default_source="toolkit.models.marian.package:default_source",
        test_preset="bergamot-tiny",
        bench_options=(Option("beam_size", "Marian: beams (default 1 = greedy).", kind="int",
                              max=16),)),
    "internvl": Family(
        "internvl", summary="image captioning (InternVL2)", default_preset="internvl-tiny",
        default_model="captioner",     # toolkit/assets/internvl/captioner (trained here)
        load="toolkit.models.internvl.loading:load_model",
        parameter_count="toolkit.models.internvl.loading:parameter_count",
        plan="toolkit.export.internvl.plan:build_plan", graphs=("vision", "decoder"),
        pipeline="toolkit.runtime.internvl.pipeline:from_graphs",
        bench="toolkit.bench.internvl:SPEC", cli="toolkit.cli.internvl",
        serve="toolkit.serve.routes.internvl", train="toolkit.train.internvl",
        commands=(("caption", "Caption images with InternVL on any backend: the toolkit's "
                              "trained small captioner by default."),),
        default_source="toolkit.models.internvl.default:default_source",
        test_preset="internvl-tiny",
        bench_options=(Option("beam_size", "InternVL: beams (default 1 = greedy).", kind="int",
                              max=8),)),
}


def get(name: str) -> Family:
    fam = FAMILIES.get(name)
    if fam is None:
        raise ToolkitError(f"unknown model {name!r}; choose one of {', '.join(FAMILIES)}")
    return fam


def names() -> str:
    """The families for help texts: ``whisper, gradtts, svt``."""
    return ", ".join(FAMILIES)

"""Model families. A family is one entry here plus one folder (or file) per layer:

    toolkit/models/<name>/    load_model(checkpoint, preset, seed) -> LoadedModel
    toolkit/export/<name>/    build_plan(loaded, calib_data=None) -> ExportPlan; EXPORT_REVISION
    toolkit/runtime/<name>/   open_pipeline(artifact=…, checkpoint=…, preset=…, loaded=…,
                                            backend=…, precision=…, seed=…) -> pipeline
    toolkit/bench/<name>.py   SPEC: a BenchSpec

``Family`` is the contract the CLI (and the contract tests) use. It sits at the top of the layer
stack, beside ``cli.py``, and no lower layer imports it. It is the one module that loads the
package's own modules on first use (``_module``), by design: ``toolkit --help``, ``doctor`` and
every one-line error stay fast, and a Whisper run never imports the video stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .core.errors import ToolkitError
from .core.files import check_replaceable, check_writable
from .core.progress import console, step

DEFAULT_OPSET = 17


def _module(path: str) -> ModuleType:
    return importlib.import_module(path)


def layer_module(layer: str, family: str) -> ModuleType:
    """``toolkit.<layer>.<family>`` (e.g. ``train.whisper``)."""
    return _module(f"toolkit.{layer}.{family}")


def export_module(name: str) -> ModuleType:
    """A family-independent export module (``tensorrt``, ``check_trt``, ``manifest``)."""
    return _module(f"toolkit.export.{name}")


@dataclass(frozen=True)
class Option:
    """A family's own ``toolkit bench`` option, e.g. Grad-TTS ``--steps 1,10``."""

    name: str
    help: str
    kind: str = "list"        # "list": comma list (strings); "int": one integer; "flag": on/off


@dataclass(frozen=True)
class Family:
    name: str
    default_preset: str                   # what --preset means when left out of a preset run
    default_model: str = ""               # the model used with no --checkpoint/--preset, if
                                          # not the default preset (whisper: trained tiny.en)
    bench_options: tuple[Option, ...] = ()
    test_preset: str = "tiny"             # the smallest preset, for the contract tests

    def layer(self, layer: str) -> ModuleType:
        """This family's module in ``layer`` (models, export, runtime, bench)."""
        return _module(f"toolkit.{layer}.{self.name}")

    # -- the contract ---------------------------------------------------------------------
    def load(self, checkpoint=None, preset=None, seed: int = 0):
        return self.layer("models").load_model(checkpoint, preset, seed)

    def build_plan(self, loaded, calib_data=None):
        return self.layer("export").build_plan(loaded, calib_data)

    def open_pipeline(self, **kwargs):
        return self.layer("runtime").open_pipeline(**kwargs)

    @property
    def bench_spec(self):
        return self.layer("bench").SPEC

    # -- what the CLI runs ----------------------------------------------------------------
    def default_tag(self, checkpoint=None, preset=None) -> str:
        return preset or (Path(checkpoint).name if checkpoint else
                          self.default_model or self.default_preset)

    def export(self, checkpoint=None, preset=None, precision="fp32", out=None, calib_data=None,
               opset: int = DEFAULT_OPSET, seed: int = 0, force: bool = False,
               external_data_mb: float | None = None) -> dict:
        out = Path(out or Path("artifacts") / f"{self.name}-"
                   f"{self.default_tag(checkpoint, preset)}-{precision}")
        # before loading a large model: never replace a directory the user did not give us
        out = check_writable(check_replaceable(out, export_module("manifest").is_artifact, force))
        self._check_room(checkpoint, preset, precision, out)
        threshold = (export_module("external").DEFAULT_THRESHOLD if external_data_mb is None
                     else int(external_data_mb * (1 << 20)))
        steps: list[dict] = []
        with step(f"loading {self.name}", steps):
            loaded = self.load(checkpoint, preset, seed)
        if loaded.random_init:
            console.print(f"[yellow]note:[/] {loaded.weights} — for speed and export work, not "
                          "for real outputs")
        return _module("toolkit.export.onnx").export_plan(
            self.build_plan(loaded, calib_data), precision, out, opset=opset, force=force,
            external_threshold=threshold, release=loaded.release, steps=steps)

    def _check_room(self, checkpoint, preset, precision: str, out: Path) -> None:
        """Memory and disk an export will need, estimated from the model's size before it is
        loaded (families that can count their parameters without loading them)."""
        models = self.layer("models")
        count = getattr(models, "parameter_count", None)
        n = count(checkpoint, preset) if count else None
        if n is not None:
            export_module("spec").check_export_room(
                n, f"{self.name} {self.default_tag(checkpoint, preset)}", precision, out)

    def bench(self, **options) -> list[dict]:
        return _module("toolkit.bench.harness").run_bench(self.bench_spec, **options)


FAMILIES = {
    "whisper": Family(
        "whisper", default_preset="tiny", default_model="tiny.en",
        bench_options=(Option("tokens", "Whisper: force this many decoded tokens (default with "
                                        "random weights: 48).", kind="int"),
                       Option("beam_size", "Whisper: beams (default 1 = greedy).", kind="int"),
                       Option("long_form", "Whisper: join the data's clips (0.3 s apart) into "
                                           "one recording and transcribe it with timestamps, "
                                           "seeking (RTF, CER/WER, words dropped/inserted).",
                              kind="flag"))),
    "gradtts": Family(
        "gradtts", default_preset="paper",
        bench_options=(Option("steps", "Grad-TTS: comma list of ODE steps."),)),
    "svt": Family(
        "svt", default_preset="vit-base",
        bench_options=(Option("frames", "SVT: comma list of clip frame counts."),
                       Option("size", "SVT: comma list of clip sizes (px)."))),
}


def get(name: str) -> Family:
    fam = FAMILIES.get(name)
    if fam is None:
        raise ToolkitError(f"unknown model {name!r}; choose one of {', '.join(FAMILIES)}")
    return fam

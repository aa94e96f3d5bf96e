"""What every command shares: the Typer apps, the consoles, one-line errors, the options every
family command takes (written once)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import registry
from .errors import err, error_line, one_line_errors, out  # noqa: F401  (shared by commands)
from .lazy import LazyGroup, from_module
from .options import number
from .train import TrainGroup


class MainGroup(LazyGroup):
    """The top-level commands; those with heavy imports (the server, the TensorRT builder)
    load when they are used."""

    def lazy(self):
        families = {name: (from_module(fam.cli, name, name.replace("-", "_")), summary)
                    for fam in registry.FAMILIES.values() for name, summary in fam.commands}
        return {
            **families,
            "build": (from_module("toolkit.cli.tensorrt", "build"),
                      "Build TensorRT engines for every graph of an artifact (needs tensorrt "
                      "+ a GPU)."),
            "check-trt": (from_module("toolkit.cli.tensorrt", "check-trt", "check_trt"),
                          "Static check of every graph against TensorRT's ONNX support (no "
                          "TensorRT needed)."),
            "serve": (from_module("toolkit.cli.serving", "serve"),
                      "Serve models over OpenAI- and LibreTranslate-style HTTP APIs, with "
                      "dynamic batching."),
            "load-test": (from_module("toolkit.cli.serving", "load-test", "load_test"),
                          "Concurrent clients against a running server: throughput, latency, "
                          "lost or duplicated answers."),
            "export-triton": (from_module("toolkit.cli.serving", "export-triton",
                                          "export_triton"),
                              "Write a Triton Inference Server model repository for Whisper "
                              "artifacts."),
        }


app = typer.Typer(cls=MainGroup, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Export PyTorch models to ONNX/TensorRT, run, serve and benchmark them "
                       f"({registry.names()}).")
train_app = typer.Typer(no_args_is_help=True, cls=TrainGroup,
                        help="Train a model family on local data.")
app.add_typer(train_app, name="train")


def note(text: str) -> None:
    err.print(f"[yellow]note:[/] {text}", soft_wrap=True)


def csv(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


Checkpoint = Annotated[Optional[str], typer.Option(
    "--checkpoint", "-c", help="Local checkpoint directory or Hugging Face hub id.")]
Preset = Annotated[Optional[str], typer.Option(
    "--preset", "-p", help="Published architecture with seeded random weights (no download).")]
Artifact = Annotated[Optional[Path], typer.Option(
    "--artifact", "-a", help="Exported artifact directory (manifest.json + graphs).")]
Seed = Annotated[int, number("--seed", "Seed for random initialisation of presets.", 0,
                             2**32 - 1)]
Backend = Annotated[str, typer.Option(help="torch or ort (GPU: ort-cuda, ort-trt, trt).")]

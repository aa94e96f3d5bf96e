"""Whisper export: TensorRT-friendly encoder and decoder graphs (no `If`, explicit KV cache)."""

from __future__ import annotations

from pathlib import Path


def export_whisper_model(lw, precision: str, out: str | Path, calib_data=None,
                         opset: int = 17) -> dict:
    """Export a loaded Whisper at ``precision`` to the artifact directory ``out``."""
    from ...export.onnx import export_plan
    from ...models.whisper.data import bundled_dir, default_calibration_files
    from .plan import build_plan

    bundled = bundled_dir() / "wavs"
    validation = [bundled / "jfk.flac", bundled / "LJ001-0002.flac"]
    calibration = default_calibration_files(calib_data) if precision.startswith("int8") else None
    if calibration is not None and len(calibration) < 4:
        from ...progress import console

        console.print(f"[yellow]warning:[/] int8 calibration on {len(calibration)} clip(s): the "
                      "activation ranges will not cover other speakers and content; give "
                      "--calib-data a folder with at least 4 (8 are used) real recordings")
    plan = build_plan(lw, validation, calibration)
    return export_plan(plan, precision, out, opset=opset)


def export_whisper(checkpoint=None, preset=None, precision="fp32", out="artifacts/whisper",
                   calib_data=None, opset=17, seed=0) -> dict:
    from ...export.artifact import check_writable
    from ...models.whisper.loading import load_whisper
    from ...progress import step

    check_writable(out)  # before loading a large model
    with step("loading Whisper"):
        lw = load_whisper(checkpoint, preset, seed)
    if lw.random_init:
        from ...progress import console

        console.print(f"[yellow]note:[/] preset {lw.source['preset']!r} has random weights "
                      f"(seed {seed}) — for speed and export work, not for transcripts")
    return export_whisper_model(lw, precision, out, calib_data, opset)

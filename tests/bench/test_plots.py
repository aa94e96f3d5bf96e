import os
import struct

import pytest

from toolkit.bench import plots
from toolkit.bench.plots import Panel, write_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _bar_records():
    return [
        {"backend": "onnxruntime", "precision": "fp32", "shape": "8x224", "rtf": 0.05, "clips_per_s": 120.0},
        {"backend": "tensorrt", "precision": "fp16", "shape": "8x224", "rtf": 0.01, "clips_per_s": 610.0},
        {"backend": "onnxruntime", "precision": "fp32", "shape": "32x224", "rtf": 0.15, "clips_per_s": 40.0},
        {"backend": "tensorrt", "precision": "fp16", "shape": "32x224", "rtf": 0.03, "clips_per_s": 203.0},
    ]


def _line_records():
    return [
        {"backend": b, "precision": p, "shape": "10 steps", "steps": steps,
         "rtf": base * steps, "quality_value": 1.0 / steps}
        for steps in (2, 10, 50)
        for b, p, base in (("onnxruntime", "fp32", 0.02), ("tensorrt", "fp16", 0.005))
    ]


def test_bar_chart_two_panels(tmp_path):
    records = _bar_records()
    assert len(records) == 4
    out = write_plot(records, tmp_path / "fig.png", "SVT bench",
                     [Panel("rtf", "RTF", log=True), Panel("clips_per_s", "clips/s")])
    assert out == tmp_path / "fig.png"
    width, height = _png_size(out)
    expected_w = 2 * plots.PANEL_WIDTH_IN * plots.DPI
    expected_h = plots.FIG_HEIGHT_IN * plots.DPI
    assert abs(width - expected_w) <= 0.05 * expected_w
    assert abs(height - expected_h) <= 0.05 * expected_h


def test_line_chart_log_x(tmp_path):
    records = _line_records()
    two = write_plot(records, tmp_path / "two.png", "Grad-TTS steps",
                     [Panel("rtf", "RTF", log=True), Panel("quality_value", "quality")],
                     x="steps", x_label="solver steps")
    one = write_plot(records, tmp_path / "one.png", "Grad-TTS steps", [Panel("rtf", "RTF")],
                     x="steps")
    assert two.is_file() and one.is_file()
    assert _png_size(one)[0] < _png_size(two)[0]


def test_panel_without_values_still_writes(tmp_path):
    records = [dict(r, cer_vs_reference=None) for r in _bar_records()]
    records[0].pop("cer_vs_reference")
    out = write_plot(records, tmp_path / "nodata.png", "Whisper bench",
                     [Panel("rtf", "RTF"), Panel("cer_vs_reference", "CER vs reference")])
    assert out is not None
    _png_size(out)


def test_empty_records_writes_nothing(tmp_path):
    target = tmp_path / "sub" / "empty.png"
    assert write_plot([], target, "nothing", [Panel("rtf", "RTF")]) is None
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_leaves_no_files(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="replace failed"):
        write_plot(_bar_records(), tmp_path / "fig.png", "SVT bench", [Panel("rtf", "RTF")])
    assert list(tmp_path.iterdir()) == []


def test_step_sweep_draws_one_line_per_series():
    """When the shape is what x encodes ("10 steps" at steps = 10), each backend × precision is
    one line over x, not one single-point series per shape."""
    from matplotlib.figure import Figure

    from toolkit.bench.plots import _line_panel

    records = [{"backend": b, "precision": "fp32", "shape": f"{n} steps", "steps": n,
                "rtf": 0.07 * n * (1.1 if b == "ort" else 1.0)}
               for b in ("torch", "ort") for n in (1, 10, 100)]
    ax = Figure().subplots()
    series = [("torch", "fp32"), ("ort", "fp32")]
    assert _line_panel(ax, records, Panel("rtf", "RTF"), series,
                       {s: f"C{i}" for i, s in enumerate(series)},
                       ["1 steps", "10 steps", "100 steps"], "steps")
    assert len(ax.lines) == 2 and all(len(line.get_xdata()) == 3 for line in ax.lines)

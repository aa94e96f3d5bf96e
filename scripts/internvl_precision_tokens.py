"""InternVL captions at reduced precision vs ``generate()`` on the fp32 PyTorch model
(docs/internvl.md, "Precisions, validation, TensorRT profiles"): the internvl-tiny preset with
the tests' seeded noise on its matrices, 8 ``val`` images, greedy and beam 5, onnxruntime.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/internvl_precision_tokens.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from toolkit.export.internvl.plan import build_plan, caption_images
from toolkit.export.onnx import export_plan
from toolkit.models.internvl.loading import load_model
from toolkit.runtime.graphs import open_artifact
from toolkit.runtime.internvl.pipeline import from_graphs


def main() -> None:
    torch.set_num_threads(1)
    loaded = load_model(preset="internvl-tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():          # as tests/conftest.py's internvl_tiny
        for p in loaded.model.parameters():
            if p.ndim >= 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    images = caption_images("val")[:8]
    refs = {beam: loaded.caption_ids(images, beam_size=beam) for beam in (1, 5)}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp16", "int8-cpu", "int8"):
            out = Path(tmp) / precision
            export_plan(build_plan(loaded), precision, out)
            pipe = from_graphs(open_artifact(out, "internvl", "ort", threads=1))
            for beam, ref in refs.items():
                got = [c.tokens for c in pipe.caption(images, beam_size=beam)]
                same = sum(a == b for a, b in zip(got, ref))
                agree = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(got, ref)) / sum(
                    len(b) for b in ref)
                print(f"{precision} beam {beam}: identical captions {same}/{len(ref)}, "
                      f"token agreement {agree:.2f}", flush=True)


if __name__ == "__main__":
    main()

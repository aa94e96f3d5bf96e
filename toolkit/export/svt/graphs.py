"""The SVT graph, ``backbone``: video ``[B, 3, T, H, W]`` → CLS ``[B, D]`` with batch, frames,
height and width all dynamic (the positional embeddings are resized inside the graph from the
input shape)."""

from __future__ import annotations

import torch

from ...models.svt.model import SVTBackbone
from ..spec import GraphSpec, Profile

GRAPH = "backbone"
INPUTS = ["video"]
OUTPUTS = ["cls"]

TOLERANCE = {
    "fp32": {"rel_l2": 1e-4, "cosine": 0.99999},
    "fp16": {"rel_l2": 2e-2, "cosine": 0.999},
    "int8": {"rel_l2": 0.25, "cosine": 0.97},
}


def backbone_spec(model: SVTBackbone) -> GraphSpec:
    cfg = model.cfg
    c = cfg.in_chans
    return GraphSpec(
        name=GRAPH, module=model, input_names=INPUTS, output_names=OUTPUTS,
        dynamic_axes={"video": {0: "batch", 2: "frames", 3: "height", 4: "width"},
                      "cls": {0: "batch"}},
        # traced at a shape away from the native one, so nothing size-specific gets baked in
        example_inputs=lambda: (torch.randn(1, c, 4, 96, 128),),
        profiles={"video": Profile([1, c, 2, 96, 96], [1, c, 8, 224, 224],
                                   [4, c, 16, 224, 224])},
        tolerance=TOLERANCE)

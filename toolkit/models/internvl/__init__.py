"""InternVL2 image captioning (vision encoder + MLP projector + decoder-only LLM): preprocessing,
the PyTorch model, both checkpoint layouts, prompts, tokenizers, presets.

Modules are imported by their own names (``image``, ``prompt`` and ``tokenizer`` need no PyTorch);
this package imports none of them."""

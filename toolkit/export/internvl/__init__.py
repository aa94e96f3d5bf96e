"""InternVL export: the vision graph (InternViT + pixel shuffle + projector) and the LLM's cached
decoder step over ``inputs_embeds`` (self-attention K/V, RoPE, grouped KV heads).

Modules are imported by their own names; this package imports none of them, so that importing
one front end never drags in PyTorch."""

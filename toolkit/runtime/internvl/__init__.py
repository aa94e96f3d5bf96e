"""InternVL runtime: image captioning over the vision graph and the shared cached-decoder loop.

Modules are imported by their own names; this package imports none of them, so that importing
one front end never drags in PyTorch."""

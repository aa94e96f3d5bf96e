"""Marian export: the encoder and the cached decoder step of a Bergamot student (SSRU state) or
a Hugging Face MarianMTModel (self-attention K/V).

Modules are imported by their own names (the registry names this family's entry points); this
package imports none of them, so that importing one front end never drags in PyTorch."""

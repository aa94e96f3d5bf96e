"""Grad-TTS (Popov et al., ICML 2021): model, text front end, audio, MAS, sampler, training.

Modules are imported by their own names (the registry names this family's entry points); this
package imports none of them, so that importing one front end never drags in PyTorch."""

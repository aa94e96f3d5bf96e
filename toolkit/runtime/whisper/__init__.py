"""Whisper runtime: the decode loop over encoder and decoder Sessions, on any backend.

Modules are imported by their own names (the registry names this family's entry points); this
package imports none of them, so that importing one front end never drags in PyTorch."""

"""Marian runtime: sentence batching, SentencePiece in and out, the shared encoder–decoder loop.

Modules are imported by their own names (the registry names this family's entry points); this
package imports none of them, so that importing one front end never drags in PyTorch."""

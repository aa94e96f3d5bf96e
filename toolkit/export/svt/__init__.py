"""SVT export: the video backbone, one graph with dynamic batch, frames, height and width.

Modules are imported by their own names (the registry names this family's entry points); this
package imports none of them, so that importing one front end never drags in PyTorch."""

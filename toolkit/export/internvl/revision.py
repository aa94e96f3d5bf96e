"""The InternVL export's revision, importable without PyTorch. Bump it when the graphs change for
the same weights (history: docs/architecture.md, "Export revisions")."""

EXPORT_REVISION = 2

"""The Whisper export's revision, importable without PyTorch (a cached export is matched
against it before any weight is loaded). Bump it when the graphs change for the same weights;
what each revision changed is listed in docs/architecture.md ("Export revisions")."""

EXPORT_REVISION = 6

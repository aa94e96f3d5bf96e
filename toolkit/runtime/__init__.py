"""Runtime: one Session interface for every backend, and the pipelines written once on top."""

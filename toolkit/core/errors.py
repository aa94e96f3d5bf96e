"""User-facing errors.

Anything a user can cause (bad input file, missing checkpoint, wrong artifact) is raised as a
``ToolkitError`` whose message is one line naming the problem and the fix. The CLI prints it
without a traceback and exits non-zero.
"""


class ToolkitError(Exception):
    """An error the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def check_positive(**values: int) -> None:
    """One-line error for the first option that is below 1 (``--batch-size 0`` …)."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ToolkitError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")


class MissingDependency(ToolkitError):
    """An optional package (tensorrt, onnxruntime-gpu, ...) is not installed."""

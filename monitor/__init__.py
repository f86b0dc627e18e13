"""The order monitor daemon. Importing it first checks the Python version, then finds its version.

The check comes before any other import and uses only syntax and modules that old Pythons have,
so Python 3.10 gets one clear sentence instead of a traceback from ``enum.StrEnum`` or ``tomllib``.
"""

import sys

REQUIRED_PYTHON = (3, 11)

if sys.version_info[:2] < REQUIRED_PYTHON:
    raise SystemExit(
        "book-order-monitor needs Python %d.%d or newer; this is Python %d.%d (%s). "
        "Install a newer Python and create the virtualenv with it."
        % (*REQUIRED_PYTHON, sys.version_info[0], sys.version_info[1], sys.executable)
    )

from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from pathlib import Path  # noqa: E402

DISTRIBUTION = "book-order-monitor"


def _version() -> str:
    """The installed distribution's version; from a plain checkout, pyproject.toml's."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


__version__ = _version()

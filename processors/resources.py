"""Where the data directories shipped with the code (``migrations/``, ``prompts/``) are found.

In a checkout they sit at the top of the repository, beside the packages. An installed wheel
carries them inside the package that reads them, under ``_data/`` (see
``[tool.hatch.build.targets.wheel.force-include]`` in pyproject.toml), because top-level
``migrations``/``prompts`` directories in site-packages would collide with other projects.
"""

from __future__ import annotations

from pathlib import Path


def data_dir(package_file: str, name: str) -> Path:
    """The directory ``name`` for the package whose module ``package_file`` (its ``__file__``) is.

    The wheel's copy wins when present: a checkout never has ``<package>/_data``.
    """
    package_dir = Path(package_file).resolve().parent
    installed = package_dir / "_data" / name
    if installed.is_dir():
        return installed
    return package_dir.parent / name

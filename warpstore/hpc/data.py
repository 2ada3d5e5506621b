"""Where the job templates and site configs are: in the wheel, or in the source tree.

A wheel carries them as package data (``warpstore/_data/``); an editable
install or a checkout uses the top-level ``templates/`` and ``site-configs/``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]

_PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """``templates`` or ``site-configs``."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"warpstore's {name}/ directory is missing (looked in {_PACKAGE / '_data'} and "
        f"{_PACKAGE.parent}): reinstall warpstore"
    )

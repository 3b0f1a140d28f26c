"""eventscope's version, read from the installed package's metadata.

``pyproject.toml`` is the one place the version is written; everything else (``eventscope
--version``, the adapter's instrumentation scope) asks the metadata, so they never disagree.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("eventscope")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

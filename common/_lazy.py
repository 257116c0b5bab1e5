"""PEP 562 lazy re-exports: a package's front door names its pieces without importing them.

``import client`` must stay as cheap as it was when ``client/__init__.py`` was empty, while
``from client import build_client_app`` still works; the heavy module (torch, Flower) is
imported on first access and the value is then cached in the package's namespace.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, for the names in ``exports``.

    Parameters
    ----------
    package
        The package's ``__name__`` (it must be in ``sys.modules``: call this from its
        ``__init__.py``).
    exports
        Public name -> the module that defines it, e.g. ``{"build_model": "common.models"}``.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__

"""Pin medfed's sibling packages to the folder beside ``medfed/``, before anything imports them.

The distribution installs top-level packages with common names (``common``, ``client``,
``server``, ``simulations``, ``deploy``). Python puts the working directory (``python -m``)
or ``PYTHONPATH`` entries ahead of site-packages, so a user's own ``common.py`` there would
be imported instead of ours, and ``medfed`` would fail (or run someone else's code). Importing
``medfed`` loads each sibling from ``ROOT/<name>/__init__.py`` into ``sys.modules`` first;
their submodules then resolve through the package's ``__path__``, so the shadow is never read.
A sibling that was already imported from somewhere else cannot be undone: that is an
``ImportError`` with one clear line. Standard library only, and cheap: each sibling's
``__init__.py`` is light (see ``common/_lazy.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# ``common`` first: the others' ``__init__.py`` import ``common._lazy``.
SIBLINGS = ("common", "client", "server", "simulations", "deploy")


class ShadowedPackageError(ImportError):
    """A sibling package was imported from somewhere other than beside ``medfed/``."""


def _origin(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def pin_siblings(root: Path = ROOT, names: tuple[str, ...] = SIBLINGS) -> None:
    """Import each of ``names`` from ``root``, or check that it already was.

    Raises
    ------
    ShadowedPackageError
        If one of them is already in ``sys.modules`` from another file.
    """
    for name in names:
        init = root / name / "__init__.py"
        if not init.is_file():
            continue  # not part of this install (nothing to protect)
        loaded = sys.modules.get(name)
        if loaded is not None:
            if _origin(loaded) != init.resolve():
                where = _origin(loaded) or "a namespace package"
                raise ShadowedPackageError(
                    f"medfed: '{name}' was imported from {where}, not from {init.parent}: "
                    f"a module named '{name}' earlier on sys.path shadows medfed's own "
                    "(rename it or run from another directory)"
                )
            continue
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(init.parent)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise

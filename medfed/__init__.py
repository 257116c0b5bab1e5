"""The ``medfed`` command and the harnesses that sit on top of everything else.

``medfed`` is the top of the import graph: it may import ``common``, ``client``, ``server``,
``simulations`` and ``deploy``; none of them imports it. Modules: ``cli`` (``main``, the
``medfed`` console script), ``commands`` (one module per subcommand), ``testing`` (harnesses
for tests and benchmarks: ``LocalFederation``, fault mods).

Importing ``medfed`` first pins its sibling packages to the folder beside it, so that a
``common.py`` (or ``client.py``, …) in the working directory cannot shadow them
(``medfed/_siblings.py``; DESIGN.md, "Top-level package names"). ``main`` is imported on
first use; the CLI itself imports torch, Flower and the like only in the function that runs a
subcommand, so that ``medfed --help`` starts fast (``tests/test_cli_startup.py``).
"""

from typing import TYPE_CHECKING

from medfed._siblings import pin_siblings

pin_siblings()

from common._lazy import lazy_exports  # noqa: E402  (after the siblings are pinned)

if TYPE_CHECKING:
    from medfed.cli import main

__all__ = ["main"]

__getattr__, __dir__ = lazy_exports(__name__, {"main": "medfed.cli"})

"""Process logging owned by the app, not by what it imports.

Importing Opacus calls ``logging.basicConfig`` (``opacus.utils.module_utils``, at module
level): the root logger of every process that imports it gets a stderr handler with Opacus'
own format. Flower's ``flwr`` logger prints through its own handler and also propagates to
the root, so in a ServerApp or ClientApp process each Flower line (the round log an operator
streams with ``flwr run --stream``, a site's "loaded N images") came out twice, once as
``12/07/2026 01:48:41:INFO:…``. The apps remove exactly that handler when they are built.
"""

from __future__ import annotations

import logging

OPACUS_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"
OPACUS_DATE_FORMAT = "%m/%d/%Y %H:%M:%S"


def drop_opacus_root_handler() -> int:
    """Remove the root handler Opacus' import installed (if any); how many were removed."""
    root = logging.getLogger()
    removed = 0
    for handler in list(root.handlers):
        formatter = handler.formatter
        if (
            type(handler) is logging.StreamHandler
            and formatter is not None
            and formatter._fmt == OPACUS_FORMAT
            and formatter.datefmt == OPACUS_DATE_FORMAT
        ):
            root.removeHandler(handler)
            removed += 1
    return removed

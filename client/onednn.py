"""Bound oneDNN's primitive cache in a ClientApp process, so its memory grows less over rounds.

PyTorch runs CPU convolutions through oneDNN, which keeps a compiled *primitive* for every
input shape it has seen, up to 1,024 by default. Under DP-SGD each step draws its own batch
size (Poisson sampling), so every step of every round adds primitives that are never reused:
one process playing the 5 hospitals of a DP simulation grew by ~45 MiB a round (a simulated
worker from ~0.6 GB to ~2.8 GB over 120 rounds). Bounded to ``PRIMITIVE_CACHE_CAPACITY``
entries it grows less (``benchmarks/client_memory.py``: over 15 rounds +496 MiB instead of
+683). The rest of that growth was each round's Opacus wrapper waiting in a reference cycle
for Python's full collection; local training now unhooks it (``client.train.unhook_opacus``).

oneDNN reads ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` when it first builds a primitive, so
``bound_primitive_cache`` runs when the ClientApp is built, before the process's first
convolution; a simulation builds it before Ray starts, and its workers inherit the setting.
A site that sets the variable in its SuperNode's environment keeps its own value.
"""

from __future__ import annotations

import os

PRIMITIVE_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
PRIMITIVE_CACHE_CAPACITY = 64


def bound_primitive_cache() -> None:
    """Bound oneDNN's primitive cache unless the environment already says how (oneDNN reads
    the value itself: a site's setting is passed through, not parsed here)."""
    os.environ.setdefault(PRIMITIVE_CACHE_ENV, str(PRIMITIVE_CACHE_CAPACITY))

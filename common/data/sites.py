"""A hospital's data folder -> labelled, preprocessed tensors (they never leave the site).

Sources: a DICOM folder (``labels.csv`` or class subfolders, see ``common.data.manifest``;
read by ``common.data.ingest`` through the site's on-disk tensor cache) or a MedMNIST-style
``.npz`` file (the path itself, or the only ``.npz`` in a folder without DICOM layout).
Without an explicit split, a deterministic hashed fraction goes to the held-out ``test`` split.
A site with no usable training image raises one ``SiteDataError`` line naming the site.

``SiteStore`` owns loaded sites for the life of a client process, so Flower's per-round
handlers read a site folder once, not every round (bounded: least recently used sites are
dropped when a simulation process serves many virtual sites).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

from common.config import DataConfig
from common.data.ingest import SiteIngest, ingest_site
from common.data.manifest import LABELS_FILE, SkippedFile
from common.data.medmnist import find_npz, load_npz_site
from common.data.sitedata import SiteData
from common.errors import SiteDataError

_log = logging.getLogger(__name__)

__all__ = ["SiteData", "SiteStore", "SkippedFile", "load_site"]


def load_site(
    root: Path,
    config: DataConfig,
    site_id: str,
    *,
    on_file: Callable[[], None] | None = None,
    console: Console | None = None,
) -> SiteData:
    """Read, check and preprocess every labelled image of a site folder (or ``.npz``)."""
    root = Path(root)
    npz = find_npz(root) if not has_dicom_layout(root) else None
    if npz is not None:
        return load_npz_site(npz, config, site_id)
    return site_data(ingest_site(root, config, site_id, console=console, on_file=on_file))


def site_data(ingest: SiteIngest) -> SiteData:
    """Stack an ingest result into tensors; raise if no training image is usable."""
    if not ingest.images["train"]:
        count = len(ingest.skipped)
        first = (
            f"; first: {ingest.skipped[0].path.name}: {ingest.skipped[0].reason}" if count else ""
        )
        raise SiteDataError(
            ingest.site_id,
            f"no usable training images in {ingest.root} ({count} problems{first}); "
            "run 'medfed site check' on the folder for the full list",
        )
    for warning in ingest.warnings:
        _log.warning("site '%s': %s", ingest.site_id, warning)
    like = ingest.images["train"][0]
    return SiteData(
        site_id=ingest.site_id,
        train_x=torch.stack(ingest.images["train"]),
        train_y=torch.tensor(ingest.labels["train"], dtype=torch.long),
        test_x=_stack_or_empty(ingest.images["test"], like),
        test_y=torch.tensor(ingest.labels["test"], dtype=torch.long),
        val_x=_stack_or_empty(ingest.images["val"], like),
        val_y=torch.tensor(ingest.labels["val"], dtype=torch.long),
        skipped=ingest.skipped,
        samples=ingest.samples,
        layout=ingest.layout,
        test_groups=list(ingest.groups["test"]),
        train_clinical=list(ingest.clinical["train"]),
        val_clinical=list(ingest.clinical["val"]),
        test_clinical=list(ingest.clinical["test"]),
    )


def has_dicom_layout(root: Path) -> bool:
    """True if ``root`` is a folder with labels.csv or subfolders (a DICOM site layout)."""
    return root.is_dir() and (
        (root / LABELS_FILE).exists()
        or any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir())
    )


def _stack_or_empty(images: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.stack(images) if images else like.new_zeros((0, *like.shape))


class SiteStore:
    """Loaded sites of one client process, keyed by folder, site id and data config.

    ``get`` loads a site on first use (through the on-disk cache) and returns the same
    ``SiteData`` afterwards; at most ``capacity`` sites are kept in memory. ``on_load`` is
    called once per actual load (e.g. to log the skipped files once, not every round).
    ``progress`` draws a rich progress bar on stderr while decoding. The store pickles
    empty (Flower's simulation ships the ClientApp, and so this store, to each worker).
    """

    def __init__(
        self,
        capacity: int = 2,
        *,
        progress: bool = False,
        on_load: Callable[[SiteData], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.progress = progress
        self.on_load = on_load
        self.loads = 0
        self._sites: OrderedDict[tuple[str, str, DataConfig], SiteData] = OrderedDict()

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "loads": 0, "_sites": OrderedDict()}

    def get(self, root: Path, config: DataConfig, site_id: str) -> SiteData:
        """The site's data, loading it only the first time (or after it was evicted)."""
        key = (str(Path(root).expanduser().resolve()), site_id, config)
        if key in self._sites:
            self._sites.move_to_end(key)
            return self._sites[key]
        console = Console(stderr=True) if self.progress else None
        data = load_site(Path(root), config, site_id, console=console)
        self.loads += 1
        if self.on_load is not None:
            self.on_load(data)
        self._sites[key] = data
        while len(self._sites) > self.capacity:
            self._sites.popitem(last=False)
        return data

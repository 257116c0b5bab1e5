"""On-disk cache of one site's preprocessed tensors, so DICOM is decoded once per content.

Where: ``<site folder>/.medfed-cache/`` by default (hidden, ignored when reading the folder;
``~/.cache/medfed/tensors/<site id>-<path hash>/`` if the folder is read-only), or
``<data.cache-dir>/<site id>-<path hash>/``. Layout:
- ``files.json``: path -> (size, mtime_ns, inode, sha256). A file's content hash is recomputed
  only when its size, modification time or inode changed (the same trade-off as git's index).
- ``<config key>/index.json`` and ``tensors.pt``: header facts and read errors per file
  content hash, tensor rows or decode errors per sample key (a hash of its files' content),
  and one packed tensor of all rows. The config key hashes every preprocessing setting plus
  ``PIPELINE_VERSION`` and the pydicom version, so changing either uses a fresh entry.
Files are written atomically (temporary file + rename); a pack that does not match its index
is ignored. Rows no longer referenced by the site folder are dropped on the next write.
With ``directory=None`` the cache only hashes files and keeps nothing on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom
import torch

from common.data.dicom import DicomInfo

PIPELINE_VERSION = 4  # bump when decoding or preprocessing code changes its output
FILES_INDEX = "files.json"
INDEX = "index.json"
PACK = "tensors.pt"
IN_SITE_DIR = ".medfed-cache"
USER_CACHE = "~/.cache/medfed/tensors"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content (hex)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def config_key(settings: Mapping[str, Any]) -> str:
    """Hash of the preprocessing settings, the pipeline version and the decoder version."""
    payload = {**settings, "pipeline": PIPELINE_VERSION, "pydicom": pydicom.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def site_cache_dir(cache_dir: str, root: Path, site_id: str) -> Path:
    """The cache folder of one site folder.

    ``cache_dir`` empty: ``<site folder>/.medfed-cache`` when the folder is writable, else
    ``USER_CACHE``. Under a shared cache folder each site gets ``<site id>-<path hash>``.
    """
    if not cache_dir:
        if os.access(root, os.W_OK):
            return root / IN_SITE_DIR
        cache_dir = USER_CACHE
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", site_id)[:64] or "site"
    where = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{safe}-{where}"


class TensorCache:
    """One site's cache for one preprocessing config (see module docstring)."""

    def __init__(self, directory: Path | None, key: str) -> None:
        self.directory = directory
        self.entry_dir = None if directory is None else directory / key
        self._stat: dict[str, list[Any]] = _read_json(directory / FILES_INDEX) if directory else {}
        index = _read_json(self.entry_dir / INDEX) if self.entry_dir else {}
        self._files: dict[str, Any] = index.get("files", {})
        self._samples: dict[str, Any] = index.get("samples", {})
        self._pack_id: str | None = index.get("pack")
        self._pack: torch.Tensor | None = None
        self._new: dict[str, list[torch.Tensor]] = {}
        self._stat_changed = False
        self._used_files: set[str] = set()
        self._used_samples: set[str] = set()

    # -- file content hashes ------------------------------------------------------------
    def digest(self, path: Path) -> str:
        """sha256 of a file's content (from the stat index when the file looks unchanged)."""
        known, fingerprint = self.known_digest(path)
        if known is not None:
            return known
        digest = file_sha256(path)
        self.remember_digest(path, fingerprint, digest)
        return digest

    def known_digest(self, path: Path) -> tuple[str | None, list[int]]:
        """The indexed sha256 if the file looks unchanged (else None), and its fingerprint."""
        stat = path.stat()
        fingerprint = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        known = self._stat.get(str(path.resolve()))
        if known is not None and known[:3] == fingerprint:
            return str(known[3]), fingerprint
        return None, fingerprint

    def remember_digest(self, path: Path, fingerprint: list[int], digest: str) -> None:
        """Index a file's sha256 (computed elsewhere, e.g. in a decoding worker)."""
        self._stat[str(path.resolve())] = [*fingerprint, digest]
        self._stat_changed = True

    # -- header facts per file ------------------------------------------------------------
    def file_info(self, digest: str) -> DicomInfo | str | None:
        """Cached header facts, or the cached reason the file is unusable, or None."""
        self._used_files.add(digest)
        entry = self._files.get(digest)
        if entry is None or ("error" not in entry and "sex" not in entry):
            return None  # unknown, or cached before the clinical facts: read the header again
        return str(entry["error"]) if "error" in entry else DicomInfo.from_json(entry)

    def put_file_info(self, digest: str, info: DicomInfo | str) -> None:
        self._used_files.add(digest)
        self._files[digest] = {"error": info} if isinstance(info, str) else info.to_json()

    # -- tensors per sample ----------------------------------------------------------------
    def has_sample(self, key: str) -> bool:
        return key in self._new or (key in self._samples and self._pack_available(key))

    def sample(self, key: str) -> list[torch.Tensor] | str:
        """The sample's tensors, or the reason it could not be decoded."""
        self._used_samples.add(key)
        if key in self._new:
            return self._new[key]
        entry = self._samples[key]
        if "error" in entry:
            return str(entry["error"])
        pack = self._load_pack()
        assert pack is not None
        return [pack[row] for row in entry["rows"]]

    def put_sample(self, key: str, tensors: list[torch.Tensor] | str) -> None:
        self._used_samples.add(key)
        if isinstance(tensors, str):
            self._samples[key] = {"error": tensors}
            self._new.pop(key, None)
        else:
            self._new[key] = tensors

    def _pack_available(self, key: str) -> bool:
        return "error" in self._samples[key] or self._load_pack() is not None

    def _load_pack(self) -> torch.Tensor | None:
        if self._pack is None and self.entry_dir is not None and self._pack_id:
            try:
                stored = torch.load(self.entry_dir / PACK, mmap=True, weights_only=True)
            except (OSError, RuntimeError, EOFError, ValueError):
                stored = None
            if stored is not None and stored.get("pack") == self._pack_id:
                self._pack = stored["images"]
            else:  # pack and index out of step: forget every cached row
                self._samples = {k: v for k, v in self._samples.items() if "error" in v}
                self._pack_id = None
        return self._pack

    # -- persistence ---------------------------------------------------------------------
    def flush(self) -> str | None:
        """Write what this load added; keep only files and samples the folder still uses.

        Never raises for an unwritable cache (a read-only site folder and home): the loaded
        data is kept and a one-line warning is returned instead (the next load decodes again).
        """
        if self.directory is None or self.entry_dir is None:
            return None
        try:
            self._write()
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            return (
                f"tensor cache not saved: cannot write {self.directory} ({why}); the next run "
                "decodes again (set data.cache-dir to a writable folder)"
            )
        return None

    def _write(self) -> None:
        assert self.directory is not None and self.entry_dir is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._stat_changed:
            _write_json(self.directory / FILES_INDEX, self._stat)
        stale = (set(self._files) - self._used_files) or (set(self._samples) - self._used_samples)
        if not self._new and not stale:
            return
        self.entry_dir.mkdir(parents=True, exist_ok=True)
        rows: list[torch.Tensor] = []
        samples: dict[str, Any] = {}
        for key in sorted(self._used_samples):
            found = self.sample(key) if key in self._new or key in self._samples else None
            if isinstance(found, str):
                samples[key] = {"error": found}
            elif found is not None:
                samples[key] = {"rows": list(range(len(rows), len(rows) + len(found)))}
                rows.extend(found)
        pack_id = secrets.token_hex(8)
        images = torch.stack(rows) if rows else torch.zeros(0)
        _atomic_save(self.entry_dir / PACK, {"pack": pack_id, "images": images})
        files = {d: v for d, v in self._files.items() if d in self._used_files}
        _write_json(self.entry_dir / INDEX, {"pack": pack_id, "files": files, "samples": samples})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def _atomic_save(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(data, temporary)
    os.replace(temporary, path)

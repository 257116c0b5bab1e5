"""A hospital's folder layout -> the list of labelled files (no pixel is read here).

Supported layouts:
- ``labels.csv`` with columns ``path,label`` and optionally ``split`` (``train``/``val``/``test``);
  a path may name a file or a folder (every file inside it gets the row's label and split);
- one subfolder per class (``normal/…``, ``opacity/…``), nested folders allowed.
Labels are class names or class indices. Rows and folders that cannot be used (unknown or
missing label, missing file, folder that is not a class) are returned as problems, not raised.
Hidden files and folders (``.name``, e.g. the ``.medfed-cache``) and ``labels.csv`` are
site metadata; every other path under the folder is used or reported with a reason (files
at the root of a class-folder site, files not named by ``labels.csv``, side files,
broken or looping symbolic links, folders that cannot be read).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import SiteDataError

LABELS_FILE = "labels.csv"
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train", "holdout": "test"}
_OWN_COLUMNS = {"path", "label", "split"}
IGNORED_SUFFIXES = {".csv", ".txt", ".md", ".json", ".npz", ".pt"}


@dataclass(frozen=True)
class LabelledFile:
    """One file of a site with its class index and split (``split`` is None when unassigned)."""

    path: Path
    label: int
    split: str | None
    named: bool = False  # a labels.csv row names this very file (a slice-level label)
    # the row's other labels.csv columns (clinical variables, ``common.data.clinical``):
    # (column, value) pairs, values as written; they stay at the site
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder, or labels.csv row) left out of training, and why."""

    path: Path
    reason: str
    fatal: bool = True  # False for side files (notes, exports' extras): listed, never strict


@dataclass(frozen=True)
class Manifest:
    """Everything a site folder lists: usable entries and the problems found on the way."""

    entries: list[LabelledFile]
    skipped: list[SkippedFile]
    layout: str


def read_manifest(root: Path, site_id: str, class_names: tuple[str, ...]) -> Manifest:
    """List the labelled files of a site folder (``labels.csv`` or class subfolders)."""
    if not root.is_dir():
        raise SiteDataError(site_id, "data folder does not exist", root)
    labels_csv = root / LABELS_FILE
    if labels_csv.exists():
        return _from_csv(labels_csv, site_id, class_names)
    manifest = _from_subfolders(root, class_names)
    if not manifest.entries and not manifest.skipped:
        raise SiteDataError(
            site_id,
            f"no labelled images found (expected {LABELS_FILE} or one folder per class: "
            f"{', '.join(class_names)})",
            root,
        )
    return manifest


def hashed_split(key: str, test_fraction: float) -> str:
    """Deterministic train/test assignment from a stable key (a path or a series UID)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return "test" if int.from_bytes(digest[:4], "big") / 2**32 < test_fraction else "train"


def shown(path: Path, root: Path | None = None) -> str:
    """A path for reports: relative to ``root`` when inside it, and printable even when the
    name is not valid UTF-8 (undecodable bytes appear as ``\\xff`` escapes)."""
    if root is not None and path.is_relative_to(root):
        path = path.relative_to(root)
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def label_index(label: str, class_names: tuple[str, ...]) -> int:
    """Class index of a label given by name or index; ``ValueError`` with a reason if unknown."""
    label = label.strip()
    if not label:
        raise ValueError("missing label")
    if label in class_names:
        return class_names.index(label)
    if label.isdigit() and int(label) < len(class_names):
        return int(label)
    raise ValueError(f"unknown label '{label}' (expected one of {', '.join(class_names)})")


def image_files(folder: Path) -> list[Path]:
    """Candidate image files under ``folder`` (sorted, hidden and side files left out)."""
    return walk_folder(folder)[0]


def walk_folder(folder: Path) -> tuple[list[Path], list[SkippedFile]]:
    """Every non-hidden file under ``folder``: candidate images (sorted), and the entries that
    cannot be images, with reasons: side files, broken or looping symbolic links, folders
    that cannot be read. Symbolic links to folders are followed, each folder read once."""
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    seen: set[tuple[int, int]] = set()

    def visit(directory: Path) -> None:
        try:
            stat = directory.stat()
            if (stat.st_dev, stat.st_ino) in seen:
                skipped.append(SkippedFile(directory, "folder already read (linked twice)"))
                return
            seen.add((stat.st_dev, stat.st_ino))
            with os.scandir(directory) as found:
                entries = sorted(found, key=lambda entry: entry.name)
        except OSError as exc:
            reason = f"cannot read folder ({exc.strerror or type(exc).__name__})"
            skipped.append(SkippedFile(directory, reason))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            reason = _entry_problem(entry)
            if reason is not None:
                skipped.append(SkippedFile(path, reason))
            elif entry.is_dir():
                visit(path)
            elif path.suffix.lower() in IGNORED_SUFFIXES:
                reason = f"not an image ({path.suffix} side file)"
                skipped.append(SkippedFile(path, reason, fatal=False))
            else:
                files.append(path)

    visit(folder)
    return sorted(files), skipped


def _entry_problem(entry: os.DirEntry[str]) -> str | None:
    """Why a folder entry is neither a folder nor a regular file to read (None if it is)."""
    try:
        if entry.is_symlink():
            os.stat(entry.path)  # follows the link: raises for a missing target or a loop
        if entry.is_dir() or entry.is_file():
            return None
        return "not a regular file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENOENT:
            return "broken symbolic link (target missing)"
        return f"cannot read ({exc.strerror or type(exc).__name__})"


def _from_csv(labels_csv: Path, site_id: str, class_names: tuple[str, ...]) -> Manifest:
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            fields = set(rows[0].keys()) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SiteDataError(site_id, f"cannot read labels.csv ({exc})", labels_csv) from None
    if rows and not {"path", "label"} <= fields:
        raise SiteDataError(site_id, "labels.csv needs the columns path,label", labels_csv)
    root = labels_csv.parent
    entries: list[LabelledFile] = []
    skipped: list[SkippedFile] = []
    for line, row in enumerate(rows, start=2):
        relative = (row.get("path") or "").strip()
        if not relative:
            skipped.append(SkippedFile(labels_csv, f"line {line}: empty path"))
            continue
        path = root / relative
        columns = tuple(
            (name.strip(), (value or "").strip())
            for name, value in row.items()
            if isinstance(name, str) and name.strip() and name not in _OWN_COLUMNS
        )
        try:
            label = label_index(row.get("label") or "", class_names)
            split = _split(row.get("split"))
        except ValueError as problem:
            skipped.append(SkippedFile(path, f"labels.csv line {line}: {problem}"))
            continue
        if path.is_dir():
            entries.extend(
                LabelledFile(file, label, split, columns=columns) for file in image_files(path)
            )
        elif path.is_file():
            entries.append(LabelledFile(path, label, split, named=True, columns=columns))
        else:
            skipped.append(SkippedFile(path, f"listed in labels.csv (line {line}) but not found"))
    listed = {os.path.normpath(entry.path) for entry in entries}
    listed |= {os.path.normpath(problem.path) for problem in skipped}
    listed.add(os.path.normpath(labels_csv))
    files, problems = walk_folder(root)
    skipped.extend(p for p in problems if os.path.normpath(p.path) not in listed)
    skipped.extend(
        SkippedFile(file, "not listed in labels.csv")
        for file in files
        if os.path.normpath(file) not in listed
    )
    return Manifest(entries, skipped, "labels.csv")


def _split(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    if not text:
        return None
    text = _SPLIT_ALIASES.get(text, text)
    if text not in SPLITS:
        raise ValueError(f"unknown split '{text}' (expected one of {', '.join(SPLITS)})")
    return text


def _from_subfolders(root: Path, class_names: tuple[str, ...]) -> Manifest:
    entries: list[LabelledFile] = []
    skipped: list[SkippedFile] = []
    try:
        top = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        return Manifest([], [SkippedFile(root, f"cannot read folder ({exc.strerror})")], "")
    for path in top:
        if not path.is_dir():
            skipped.append(SkippedFile(path, _root_file_reason(path)))
        elif path.name not in class_names:
            reason = f"folder '{path.name}' is not a class ({', '.join(class_names)})"
            skipped.append(SkippedFile(path, reason))
        else:
            files, problems = walk_folder(path)
            label = class_names.index(path.name)
            entries.extend(LabelledFile(file, label, None) for file in files)
            skipped.extend(problems)
    return Manifest(entries, skipped, "class folders")


def _root_file_reason(path: Path) -> str:
    """Why a file at the root of a class-folder site is not read."""
    if path.is_symlink() and not path.exists():
        return "broken symbolic link or link loop"
    if path.name.upper() == "DICOMDIR":
        return "DICOMDIR (a media index, not an image; images are read from class folders)"
    return "file at the site root is not in a class folder"

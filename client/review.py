"""What a Flower app bundle (FAB) contains, read before a hospital approves its hash.

``review_fab(fab_bytes, installed_root)`` reads the FAB as a zip only (nothing in it is
imported, installed or executed) and returns an ``AppReview``: the FAB hash (Flower's:
SHA-256 of the FAB's bytes), the app's name, version, publisher and components, every file
with its SHA-256 checked against the FAB's ``.info/CONTENT`` manifest, the run-config
defaults it will run with, and its Python files compared with the medfed release installed
at the site (the source tree at ``installed_root``), including the hash of the FAB that
release builds with Flower's own builder. ``locate_fab`` finds the FAB to review: a file, or
a hash (or unique prefix) among the FABs a site's gate kept in ``<state-dir>/apps/``.

Text taken from the FAB (paths, diffs, file content) is made visible before it is shown:
control and bidirectional-override characters become ``\\x..``/``\\u....`` escapes, so a
file cannot hide lines from the person reviewing it.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import tomllib
import unicodedata
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client.approvals import SEEN_APPS_DIR, build_release_fab
from common.errors import MedfedError

FAB_SUFFIX = ".fab"
MANIFEST = ".info/CONTENT"  # Flower's manifest: one "path,sha256,size_bits" line per file
PYPROJECT = "pyproject.toml"
MAX_FAB_BYTES = 64 * 1024 * 1024  # Flower refuses to build FABs over 10 MB
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_SHOWN_LINES = 200  # per file, for a diff or a new file's content
MIN_PREFIX = 8
RUN_CONFIG_NOTE = (
    "values are the app's defaults: `flwr run --run-config` can override any of them at run time"
)
_HASH_PREFIX = re.compile(r"[0-9a-fA-F]{8,64}")


class FabError(MedfedError):
    """A FAB cannot be found or read (not a zip, no pyproject.toml, unknown hash)."""


@dataclass(frozen=True)
class FabFile:
    """One file of the FAB; ``manifest`` is "ok", "mismatch", "unlisted" or "missing"."""

    path: str
    sha256: str
    size: int
    manifest: str


@dataclass(frozen=True)
class PythonFile:
    """A Python file compared with the installed release.

    ``status`` is "identical", "changed", "new" (only in the FAB) or "release-only";
    ``lines`` is the unified diff (changed) or the content (new), cut after
    ``MAX_SHOWN_LINES``; ``omitted`` counts the lines cut.
    """

    path: str
    status: str
    lines: list[str] = field(default_factory=list)
    omitted: int = 0


@dataclass
class AppReview:
    """Everything ``medfed site review`` shows about one FAB."""

    fab_hash: str
    size: int
    name: str
    version: str
    publisher: str
    components: dict[str, str]
    dependencies: list[str]
    files: list[FabFile]
    problems: list[str]
    run_config: dict[str, Any]
    release_run_config: dict[str, Any]
    python: list[PythonFile]
    release_root: str
    release_hash: str | None = None
    release_error: str | None = None

    def count(self, status: str) -> int:
        """How many Python files have ``status``."""
        return sum(item.status == status for item in self.python)

    @property
    def is_installed_release(self) -> bool:
        """True when the FAB is byte for byte the FAB the installed release builds."""
        return self.release_hash == self.fab_hash

    @property
    def summary(self) -> str:
        """One line: how the FAB's Python files compare with the installed release."""
        return (
            f"{self.count('identical')} Python files identical to the installed medfed release, "
            f"{self.count('changed')} changed, {self.count('new')} new"
            f" ({self.count('release-only')} only in the release)"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``--json``)."""
        return {
            **asdict(self),
            "is_installed_release": self.is_installed_release,
            "summary": self.summary,
            "run_config_note": RUN_CONFIG_NOTE,
        }


def locate_fab(argument: str, state_dir: Path | None = None) -> Path:
    """The FAB named by ``argument``: a ``.fab`` file, or a hash (prefix) in ``state_dir``."""
    path = Path(argument).expanduser()
    if path.is_dir():
        raise FabError(f"{path}: is a folder, not a FAB file")
    if path.exists():
        return path
    if _HASH_PREFIX.fullmatch(argument):
        if state_dir is None:
            raise FabError(
                f"{argument}: no such file; to look up a FAB by hash, pass --state-dir "
                "(the site's state directory)"
            )
        return find_seen_fab(state_dir, argument)
    raise FabError(f"{argument}: no such FAB file (nor a FAB hash of 8 to 64 hex digits)")


def find_seen_fab(state_dir: Path, hash_or_prefix: str) -> Path:
    """``<state_dir>/apps/<hash>.fab`` for a full hash or a unique prefix (>= 8 hex digits)."""
    prefix = hash_or_prefix.lower()
    if not _HASH_PREFIX.fullmatch(prefix):
        raise FabError(f"'{hash_or_prefix}' is not a FAB hash (8 to 64 hex digits)")
    apps = Path(state_dir).expanduser() / SEEN_APPS_DIR
    if not apps.is_dir():
        raise FabError(f"{apps}: no such folder (this site has not kept any app)")
    matches = sorted(p for p in apps.glob(f"*{FAB_SUFFIX}") if p.stem.startswith(prefix))
    if not matches:
        raise FabError(f"no app with hash {prefix} in {apps}")
    if len(matches) > 1:
        names = ", ".join(p.stem[:16] for p in matches[:5])
        raise FabError(f"hash prefix {prefix} is ambiguous in {apps}: {names}")
    return matches[0]


def read_fab(path: Path) -> bytes:
    """The FAB's bytes (size-checked; an unreadable file is a one-line ``FabError``)."""
    try:
        size = path.stat().st_size
        if size > MAX_FAB_BYTES:
            raise FabError(f"{path}: {size} bytes is too large for a FAB")
        return path.read_bytes()
    except OSError as error:
        raise FabError(f"{path}: cannot read: {error.strerror or error}") from None


def review_fab(fab_bytes: bytes, installed_root: Path) -> AppReview:
    """Review a FAB against the medfed release whose source tree is ``installed_root``."""
    fab_hash = hashlib.sha256(fab_bytes).hexdigest()
    contents, problems = _unpack(fab_bytes)
    pyproject = _load_pyproject(contents)
    files = _check_manifest(contents, problems)
    release_hash, release_error, release_files = _installed_release(installed_root, contents)
    release_pyproject = _release_pyproject(installed_root)
    app = pyproject.get("tool", {}).get("flwr", {}).get("app", {})
    project = pyproject.get("project", {})
    return AppReview(
        fab_hash=fab_hash,
        size=len(fab_bytes),
        name=_visible(str(project.get("name", "?"))),
        version=_visible(str(project.get("version", "?"))),
        publisher=_visible(str(app.get("publisher", "?"))),
        components={k: _visible(str(v)) for k, v in app.get("components", {}).items()},
        dependencies=[_visible(str(d)) for d in project.get("dependencies", [])],
        files=files,
        problems=problems,
        run_config=flatten(app.get("config", {})),
        release_run_config=flatten(
            release_pyproject.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
        ),
        python=compare_python(contents, release_files),
        release_root=str(installed_root),
        release_hash=release_hash,
        release_error=release_error,
    )


def compare_python(fab: dict[str, bytes], release: dict[str, bytes]) -> list[PythonFile]:
    """Each ``.py`` file of either side: identical, changed, new (only in the FAB), release-only."""
    result = []
    for path in sorted({p for p in (*fab, *release) if p.endswith(".py")}):
        shown = _visible(path)
        if path not in fab:
            result.append(PythonFile(shown, "release-only"))
        elif path not in release:
            result.append(_cut(shown, "new", _text(fab[path]).splitlines()))
        elif fab[path] == release[path]:
            result.append(PythonFile(shown, "identical"))
        else:
            diff = difflib.unified_diff(
                _text(release[path]).splitlines(),
                _text(fab[path]).splitlines(),
                fromfile=f"installed/{shown}",
                tofile=f"fab/{shown}",
                lineterm="",
            )
            result.append(_cut(shown, "changed", list(diff)))
    return result


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (run-config keys as Flower flattens them)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[_visible(name)] = _visible(value) if isinstance(value, str) else value
    return flat


def _unpack(fab_bytes: bytes) -> tuple[dict[str, bytes], list[str]]:
    """Every file of the zip, read into memory (never extracted), and structural problems."""
    problems: list[str] = []
    try:
        with zipfile.ZipFile(io.BytesIO(fab_bytes)) as archive:
            entries = [info for info in archive.infolist() if not info.is_dir()]
            if sum(info.file_size for info in entries) > MAX_UNPACKED_BYTES:
                raise FabError(f"FAB unpacks to more than {MAX_UNPACKED_BYTES} bytes")
            contents: dict[str, bytes] = {}
            for info in entries:
                if info.filename in contents:
                    problems.append(f"duplicate zip entry: {_visible(info.filename)}")
                contents[info.filename] = archive.read(info)
    except zipfile.BadZipFile:
        raise FabError("not a FAB: the file is not a zip archive") from None
    except (OSError, RuntimeError, NotImplementedError, EOFError) as error:
        raise FabError(f"not a readable FAB: {error}") from None
    for path in contents:
        if path.startswith("/") or ".." in path.split("/"):
            problems.append(f"path outside the app folder: {_visible(path)}")
        if _visible(path) != path:
            problems.append(f"path with control characters: {_visible(path)}")
    return contents, problems


def _load_pyproject(contents: dict[str, bytes]) -> dict[str, Any]:
    if PYPROJECT not in contents:
        raise FabError(f"not a FAB: it has no {PYPROJECT}")
    try:
        return tomllib.loads(contents[PYPROJECT].decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise FabError(f"the FAB's {PYPROJECT} cannot be read: {error}") from None


def _check_manifest(contents: dict[str, bytes], problems: list[str]) -> list[FabFile]:
    """Every file with its hash and size, checked against ``.info/CONTENT``."""
    listed: dict[str, tuple[str, int]] = {}
    if MANIFEST not in contents:
        problems.append(f"no {MANIFEST} manifest: nothing to check the files against")
    else:
        for line in _text(contents[MANIFEST]).splitlines():
            path, sha, bits = [*line.rsplit(",", 2), "", ""][:3]
            listed[path] = (sha, int(bits) if bits.isdigit() else -1)
    files = []
    for path, data in sorted(contents.items()):
        if path == MANIFEST:
            continue
        sha = hashlib.sha256(data).hexdigest()
        if MANIFEST not in contents:
            status = "unlisted"
        elif path not in listed:
            status = "unlisted"
            problems.append(f"not in {MANIFEST}: {_visible(path)}")
        elif listed[path] != (sha, 8 * len(data)):
            status = "mismatch"
            problems.append(f"differs from {MANIFEST} (hash or size): {_visible(path)}")
        else:
            status = "ok"
        files.append(FabFile(_visible(path), sha, len(data), status))
    for path in sorted(set(listed) - set(contents)):
        if path:
            sha, bits = listed[path]
            files.append(FabFile(_visible(path), sha, max(bits, 0) // 8, "missing"))
            problems.append(f"listed in {MANIFEST} but not in the FAB: {_visible(path)}")
    return files


def _installed_release(
    root: Path, fab: dict[str, bytes]
) -> tuple[str | None, str | None, dict[str, bytes]]:
    """(hash of the FAB the release builds, why it could not be built, its files)."""
    try:
        built = build_release_fab(root)
    except MedfedError as error:  # e.g. installed from a wheel: reported, the review goes on
        reason = " ".join(str(error).split()) or type(error).__name__
        tops = {path.split("/")[0] for path in fab if "/" in path}
        files = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for top in sorted(tops)
            if (root / top).is_dir()
            for path in (root / top).rglob("*.py")
            if "__pycache__" not in path.parts
        }
        return None, f"cannot build the installed release's FAB: {reason}", files
    with zipfile.ZipFile(io.BytesIO(built)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return hashlib.sha256(built).hexdigest(), None, files


def _release_pyproject(root: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((root / PYPROJECT).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _cut(path: str, status: str, lines: list[str]) -> PythonFile:
    shown = [_visible(line) for line in lines[:MAX_SHOWN_LINES]]
    return PythonFile(path, status, shown, max(0, len(lines) - MAX_SHOWN_LINES))


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _visible(text: str) -> str:
    """``text`` with control, format (bidi override) and separator characters escaped."""
    if text.isprintable():
        return text
    return "".join(char if char == "\t" or char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    name = unicodedata.name(char, "")
    return f"\\u{code:04x}" if not name else f"\\N{{{name}}}"

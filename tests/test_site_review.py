"""``medfed site review``: a FAB's files, run config and Python diff against the installed release.

FABs are built with Flower's own builder from this checkout's files (in memory), so the
unmodified one is byte for byte what ``flwr run .`` would ship.
"""

from __future__ import annotations

import hashlib
import io
import json
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_files
from flwr.cli.utils import collect_files

from client.review import SEEN_APPS_DIR, FabError, find_seen_fab, review_fab
from medfed.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_fab(changes: dict[str, bytes] | None = None) -> bytes:
    """The FAB of this checkout, with ``changes`` (path -> new content) applied first."""
    files: dict[str, bytes | Path] = dict(collect_files(REPO_ROOT))
    files.update(changes or {})
    return build_fab_from_files(files)[0]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _marker_line(marker: Path) -> bytes:
    return f"\nopen({str(marker)!r}, 'w').write('ran')\n".encode()


@pytest.fixture(scope="module")
def release_fab() -> bytes:
    return build_fab()


def test_the_unmodified_app_is_the_installed_release(release_fab: bytes) -> None:
    # Execute
    review = review_fab(release_fab, REPO_ROOT)

    # Assert
    assert review.fab_hash == hashlib.sha256(release_fab).hexdigest()
    assert review.release_hash == review.fab_hash and review.is_installed_release
    assert review.count("changed") == review.count("new") == 0
    assert review.count("identical") > 50
    assert (review.publisher, review.name) == ("medfed", "medfed")
    assert review.components == {"serverapp": "server.app:app", "clientapp": "client.app:app"}
    assert review.problems == []
    assert {f.manifest for f in review.files} == {"ok"}
    assert "client/app.py" in {f.path for f in review.files}


def test_run_config_is_the_apps_pyproject_config(release_fab: bytes) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    review = review_fab(release_fab, REPO_ROOT)

    assert review.run_config == pyproject["tool"]["flwr"]["app"]["config"]


def test_a_modified_client_is_shown_as_a_diff(tmp_path: Path) -> None:
    # Prepare
    marker = tmp_path / "marker"
    app_py = (REPO_ROOT / "client" / "app.py").read_bytes() + _marker_line(marker)
    fab = build_fab({"client/app.py": app_py})

    # Execute
    review = review_fab(fab, REPO_ROOT)

    # Assert
    assert not review.is_installed_release and review.release_hash != review.fab_hash
    changed = [item for item in review.python if item.status == "changed"]
    assert [item.path for item in changed] == ["client/app.py"]
    added = [line for line in changed[0].lines if line.startswith("+") and "marker" in line]
    assert added == [f"+open({str(marker)!r}, 'w').write('ran')"]
    assert review.summary.startswith(f"{review.count('identical')} Python files identical")
    assert ", 1 changed, 0 new" in review.summary
    assert not marker.exists()


def test_a_new_file_is_shown_in_full_with_its_hidden_characters_escaped() -> None:
    source = b"import os\nprint(os.listdir('/data'))  # \xe2\x80\xae hidden\n"

    review = review_fab(build_fab({"client/extra.py": source}), REPO_ROOT)

    new = [item for item in review.python if item.status == "new"]
    assert [item.path for item in new] == ["client/extra.py"]
    assert new[0].lines[0] == "import os"
    assert "RIGHT-TO-LEFT OVERRIDE" in new[0].lines[1] and "\u202e" not in new[0].lines[1]
    assert ", 0 changed, 1 new" in review.summary


def test_files_that_differ_from_the_manifest_are_flagged(release_fab: bytes) -> None:
    # Prepare: swap one file's bytes and add one, keeping Flower's .info/CONTENT as it was
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(release_fab)) as source,
        zipfile.ZipFile(buffer, "w") as target,
    ):
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data + b"\nx = 1\n" if name == "client/site.py" else data)
        target.writestr("client/sneaky.py", b"x = 2\n")

    # Execute
    review = review_fab(buffer.getvalue(), REPO_ROOT)

    # Assert
    status = {item.path: item.manifest for item in review.files}
    assert status["client/site.py"] == "mismatch" and status["client/sneaky.py"] == "unlisted"
    assert status["client/app.py"] == "ok"
    assert any("client/site.py" in problem for problem in review.problems)


def test_cli_prints_the_hash_and_json_parses(
    tmp_path: Path, release_fab: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    fab = _write(tmp_path / "medfed.fab", release_fab)
    fab_hash = hashlib.sha256(release_fab).hexdigest()

    assert main(["site", "review", str(fab)]) == 0
    out = capsys.readouterr().out
    assert fab_hash in out
    assert "this is exactly the installed medfed release" in out
    assert "--run-config" in out

    assert main(["site", "review", str(fab), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fab_hash"] == fab_hash and report["is_installed_release"] is True


def test_cli_finds_a_kept_fab_by_hash_prefix(
    tmp_path: Path, release_fab: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    fab_hash = hashlib.sha256(release_fab).hexdigest()
    _write(tmp_path / "state" / SEEN_APPS_DIR / f"{fab_hash}.fab", release_fab)

    code = main(["site", "review", fab_hash[:10], "--state-dir", str(tmp_path / "state")])

    assert code == 0 and fab_hash in capsys.readouterr().out


def test_review_never_runs_the_apps_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: an app whose client module and package init write a marker when imported
    marker = tmp_path / "marker"
    line = _marker_line(marker)
    changes = {
        "client/app.py": (REPO_ROOT / "client" / "app.py").read_bytes() + line,
        "client/__init__.py": (REPO_ROOT / "client" / "__init__.py").read_bytes() + line,
        "sitecustomize.py": line,
    }
    fab = _write(tmp_path / "evil.fab", build_fab(changes))

    # Execute
    code = main(["site", "review", str(fab), "--json"])

    # Assert
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["is_installed_release"] is False
    assert {item["path"] for item in report["python"] if item["status"] == "changed"} == {
        "client/app.py",
        "client/__init__.py",
    }
    assert not marker.exists()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: [str(tmp / "missing.fab")], "no such FAB file"),
        (lambda tmp: [str(_write(tmp / "a.fab", b"not a zip"))], "not a zip archive"),
        (lambda tmp: [str(_write(tmp / "b.fab", _zip({"x.py": b""})))], "no pyproject.toml"),
        (lambda tmp: [str(tmp)], "is a folder"),
        (lambda tmp: ["ab" * 8], "pass --state-dir"),
        (lambda tmp: ["ab" * 8, "--state-dir", str(tmp)], "no such folder"),
        (
            lambda tmp: [
                "ab" * 8,
                "--state-dir",
                str(_write(tmp / SEEN_APPS_DIR / "c.fab", b"").parent.parent),
            ],
            "no app with hash abababababababab",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, expected: str
) -> None:
    code = main(["site", "review", *make(tmp_path)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("medfed: error: ") and err.count("\n") == 1
    assert expected in err and "Traceback" not in err


def test_an_ambiguous_hash_prefix_is_refused(tmp_path: Path) -> None:
    apps = tmp_path / SEEN_APPS_DIR
    for name in ("12345678" + "a" * 56, "12345678" + "b" * 56):
        _write(apps / f"{name}.fab", b"")

    with pytest.raises(FabError, match="ambiguous"):
        find_seen_fab(tmp_path, "12345678")
    assert find_seen_fab(tmp_path, "12345678b").name.startswith("12345678b")


def test_a_release_without_pyproject_is_still_compared(tmp_path: Path, release_fab: bytes) -> None:
    # Prepare: an "installed release" as a wheel leaves it: packages, no pyproject.toml
    _write(tmp_path / "client" / "app.py", (REPO_ROOT / "client" / "app.py").read_bytes())
    _write(tmp_path / "client" / "gone.py", b"x = 1\n")

    # Execute
    review = review_fab(release_fab, tmp_path)

    # Assert
    assert review.release_hash is None and not review.is_installed_release
    assert review.release_error.startswith("cannot build the installed release's FAB: ")
    status = {item.path: item.status for item in review.python}
    assert status["client/app.py"] == "identical" and status["client/gone.py"] == "release-only"
    assert status["client/site.py"] == "new"

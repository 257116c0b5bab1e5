"""The built wheel: what it ships (scenarios, the testing harnesses) and what it leaves out."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from medfed.testing.timing import scaled

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "client", "server", "simulations", "deploy", "medfed")


def _build_wheel(tmp_path: Path) -> list[str]:
    """Build the wheel from a copy of the sources (the build writes build/ and *.egg-info)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package, ignore=skip)
    out = tmp_path / "dist"
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=scaled(300),
    )
    (wheel,) = out.glob("medfed-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_ships_the_scenarios_and_harnesses_but_no_tests_or_benchmarks(
    tmp_path: Path,
) -> None:
    # Prepare
    scenarios = sorted(
        f"simulations/scenarios/{p.name}" for p in (REPO_ROOT / "simulations/scenarios").glob("*")
    )

    # Execute
    names = _build_wheel(tmp_path)

    # Assert
    assert scenarios and set(scenarios) <= set(names), "scenario TOMLs missing from the wheel"
    assert {name.split("/")[0] for name in names} == {*PACKAGES, "medfed-0.1.0.dist-info"}
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/"))]
    assert "server/report_template.py" in names, "the report template ships with the code"
    assert "medfed/testing/federation.py" in names and "medfed/testing/faults.py" in names
    assert "deploy/local.py" not in names and "simulations/faults.py" not in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_every_file_the_apps_packages_need_travels_in_a_flower_bundle() -> None:
    """A FAB carries only Flower's built-in file types: a ``.j2`` template (or any other data
    file) under the app's packages would be missing wherever the app runs from a FAB."""
    from flwr.common.constant import FAB_INCLUDE_PATTERNS
    from pathspec import PathSpec

    carried = PathSpec.from_lines("gitwildmatch", FAB_INCLUDE_PATTERNS)
    root = Path(__file__).parents[1]
    missing = [
        str(path.relative_to(root))
        for package in ("common", "client", "server", "simulations")
        for path in (root / package).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and not carried.match_file(str(path.relative_to(root)))
    ]

    assert missing == []

"""A user's own ``common.py`` (or ``client.py``, …) must not break the ``medfed`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from medfed._siblings import ShadowedPackageError, pin_siblings
from medfed.testing.timing import scaled

REPO_ROOT = Path(__file__).resolve().parent.parent
SHADOWED = ("common", "client", "server", "simulations", "deploy")
HOSTILE = 'raise SystemExit("shadowed: {name}.py in the working directory was imported")\n'
# What the ``medfed`` console script runs (pip's generated wrapper).
CONSOLE_SCRIPT = "import sys; from medfed.cli import main; sys.exit(main())"


def _hostile_dir(tmp_path: Path) -> Path:
    for name in SHADOWED:
        (tmp_path / f"{name}.py").write_text(HOSTILE.format(name=name))
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The working directory comes first on sys.path ("" for -c, the cwd for -m), and "." in
    # PYTHONPATH again, both ahead of this checkout: the worst case short of a medfed.py.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([".", str(REPO_ROOT)])}
    return subprocess.run(
        [sys.executable, *args, "--help"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )


@pytest.mark.parametrize(
    "args", [["-m", "medfed"], ["-c", CONSOLE_SCRIPT]], ids=["python-m", "console-script"]
)
def test_medfed_help_works_beside_hostile_common_py(tmp_path: Path, args: list[str]) -> None:
    # Prepare
    cwd = _hostile_dir(tmp_path)

    # Execute
    result = _run(args, cwd)

    # Assert
    assert result.returncode == 0, result.stderr
    assert "shadowed" not in result.stdout + result.stderr
    assert "usage: medfed" in result.stdout


def test_pin_siblings_loads_the_package_beside_medfed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a package "probe" in root, and a shadowing probe.py earlier on sys.path
    name = "medfed_pin_probe"
    (tmp_path / "root" / name).mkdir(parents=True)
    (tmp_path / "root" / name / "__init__.py").write_text("WHERE = 'root'\n")
    (tmp_path / "root" / name / "sub.py").write_text("WHERE = 'root.sub'\n")
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / f"{name}.py").write_text("raise SystemExit('shadowed')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "shadow"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delitem(sys.modules, f"{name}.sub", raising=False)

    # Execute
    pin_siblings(tmp_path / "root", (name,))
    from medfed_pin_probe import sub  # type: ignore[import-not-found]

    # Assert
    assert sys.modules[name].WHERE == "root" and sub.WHERE == "root.sub"
    monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, f"{name}.sub")


def test_pin_siblings_names_an_already_imported_shadow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    name = "medfed_pin_probe"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    impostor = types.ModuleType(name)
    impostor.__file__ = str(tmp_path / f"{name}.py")
    monkeypatch.setitem(sys.modules, name, impostor)

    # Execute / Assert
    with pytest.raises(ShadowedPackageError, match=rf"'{name}' was imported from .*shadows"):
        pin_siblings(tmp_path, (name,))

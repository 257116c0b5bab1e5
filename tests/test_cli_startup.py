"""``medfed --help`` must not import the heavy libraries (issue 17): a structural check.

Building the argument parser (every subcommand, with ``demo``'s defaults from
``MedfedConfig``) runs in a fresh interpreter; the heavy packages are imported only by the
function that runs a command. Timing is measured in ``benchmarks/cli_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from medfed.testing.timing import scaled

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "flwr", "opacus", "pydicom", "matplotlib", "ray", "sklearn", "numpy", "rich")
PROBE = (
    "import json, sys, medfed.cli\n"
    "medfed.cli.build_parser()\n"
    f"heavy = {set(HEAVY)!r}\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
)


def _imported_by(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=scaled(120),
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_nothing_heavy():
    assert _imported_by(PROBE) == []


def test_help_imports_nothing_heavy():
    code = (
        "import json, sys, contextlib, io, medfed.cli\n"
        "for argv in (['--help'], ['site', 'check', '--help'], ['demo', '--help'],\n"
        "             ['predict', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        medfed.cli.main(argv)\n"
        f"heavy = {set(HEAVY)!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    assert _imported_by(code) == []

"""Rewrite ``[tool.flwr.app.config]`` in pyproject.toml from ``MedfedConfig``'s defaults.

Flower refuses ``--run-config`` keys that are not in the app's defaults, so every config key
must be listed there; ``tests/test_config.py`` checks they agree. Run after adding a setting:
    .venv/bin/python scripts/sync_run_config.py
"""

from __future__ import annotations

from pathlib import Path

from common.config import MedfedConfig

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
HEADER = "[tool.flwr.app.config]\n"
RUN_NAME = "flwr-run"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def main() -> None:
    flat = MedfedConfig().replace(**{"run.name": RUN_NAME}).to_flat()
    block = "".join(f'"{key}" = {_toml_value(value)}\n' for key, value in flat.items())
    text = PYPROJECT.read_text()
    start = text.index(HEADER) + len(HEADER)
    end = text.index("\n[", start)
    PYPROJECT.write_text(text[:start] + block + text[end:])


if __name__ == "__main__":
    main()

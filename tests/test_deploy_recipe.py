"""The README's deployment recipe uses the same Flower flags as ``deploy.commands``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from deploy.commands import (
    INSECURE_WARNING,
    SuperLinkSpec,
    SuperNodeSpec,
    executor_command,
    flwr_config_toml,
    register_command,
    run_command,
    superlink_command,
    supernode_command,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def _deployment_section() -> str:
    text = README.read_text()
    start = text.index("## Deploy across hospitals")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _secure_commands(tmp_path: Path) -> list[list[str]]:
    node = SuperNodeSpec(
        "h:1", tmp_path / "ca.crt", tmp_path / "a.key", tmp_path, "a", 0, state_dir=tmp_path
    )
    return [
        superlink_command(SuperLinkSpec(tmp_path, tmp_path / "db")),
        supernode_command(node),
        executor_command(node),
        register_command(tmp_path / "a.pub", "medfed", "a"),
        run_command(tmp_path, "medfed", {"federation.num-rounds": 3}),
    ]


def test_readme_recipe_uses_every_flag_the_tests_use(tmp_path: Path) -> None:
    section = _deployment_section()

    for command in _secure_commands(tmp_path):
        assert " ".join(command[:3]) in section or command[0] in section
        for flag in (token for token in command if token.startswith("--")):
            assert flag in section, (command[0], flag)
    spec = SuperNodeSpec("h:1", None, None, tmp_path, "a", 0, state_dir=tmp_path)
    for key in spec.node_config():
        assert f"{key}=" in section
    assert "root-certificates = " in section
    # issue 9: SuperLink on loopback only, hospitals dial the gateway, CLI uses loopback
    assert '--host 127.0.0.1 --port "$SUPERLINK_PORT"' in section
    assert 'flower-supernode --superlink "$COORDINATOR_HOST:$GATEWAY_PORT"' in section
    assert 'address = "127.0.0.1:$SUPERLINK_PORT"' in section
    assert "medfed certs gateway-config" in section and "nginx -c" in section
    # issue 12: every SuperNode starts the approving way, next to its gate
    assert "--isolation process" in section and "medfed site executor" in section
    assert "medfed site approve --installed-release" in section
    assert "--insecure" not in "".join(
        line for line in section.splitlines() if line.startswith(("flower-", "  --"))
    )


def test_secure_by_default_and_insecure_only_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secure = _secure_commands(tmp_path)
    assert "--enable-supernode-auth" in secure[0] and "--insecure" not in secure[0]
    assert "--root-certificates" in secure[1] and "--auth-supernode-private-key" in secure[1]
    assert not caplog.records

    with caplog.at_level(logging.WARNING, logger="medfed.deploy"):
        link = superlink_command(SuperLinkSpec(tmp_path, tmp_path / "db", insecure=True))
        toml = flwr_config_toml("medfed", "h:1", None, insecure=True)

    assert "--insecure" in link and "--enable-supernode-auth" not in link
    assert "insecure = true" in toml
    assert [r.getMessage() for r in caplog.records] == [INSECURE_WARNING] * 2

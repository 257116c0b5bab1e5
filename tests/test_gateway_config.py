"""``medfed certs gateway-config``: the nginx config allows only the SuperNode's Fleet routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flwr.superlink.main import create_app

from deploy.gateway import FLEET_PREFIX, SUPERNODE_FLEET_ROUTES
from medfed.cli import main


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    assert main(["certs", "init", str(directory), "--server-name", "fl.example.org"]) == 0
    return directory


def test_config_forwards_exactly_the_supernode_routes_as_post(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["certs", "gateway-config", str(certs), "--listen", "fl.example.org:443",
         "--upstream", "127.0.0.1:9092"]
    )  # fmt: skip

    assert code == 0
    text = (certs / "gateway" / "nginx.conf").read_text()
    exact = re.findall(r"location = (\S+) \{", text)
    assert exact == [FLEET_PREFIX + route for route in SUPERNODE_FLEET_ROUTES]
    passes = re.findall(r"proxy_pass (\S+);", text)
    assert passes == [f"https://127.0.0.1:9092{path}" for path in exact]
    assert text.count("limit_except POST { deny all; }") == len(exact)
    assert re.search(r"location / \{\s+default_type text/plain;\s+return 403", text)
    assert "listen fl.example.org:443 ssl;" in text
    assert "proxy_ssl_verify on;" in text and "proxy_ssl_name localhost;" in text
    assert "client_max_body_size 64m;" in text
    # every allowed route is a POST route of the installed SuperLink's Fleet API
    paths = create_app().openapi()["paths"]
    assert all(list(paths[path]) == ["post"] for path in exact)
    assert "start it with:  nginx -c" in capsys.readouterr().out


def test_a_non_loopback_superlink_is_refused_unless_explicitly_accepted(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["certs", "gateway-config", str(certs), "--listen", "fl.example.org:443"]

    refused = main([*args, "--upstream", "10.1.2.3:9092"])
    err = capsys.readouterr().err
    written = (certs / "gateway" / "nginx.conf").exists()
    accepted = main([*args, "--upstream", "10.1.2.3:9092", "--i-know-control-api-is-exposed"])
    warning = capsys.readouterr().err

    assert refused == 2 and err.startswith("medfed: error: the SuperLink upstream 10.1.2.3:9092")
    assert err.count("\n") == 1 and not written
    assert accepted == 0 and warning.startswith("medfed: warning:") and "Control API" in warning


def test_the_listen_address_must_be_in_the_server_certificate(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["certs", "gateway-config", str(certs), "--listen", "203.0.113.9:443",
         "--upstream", "127.0.0.1:9092"]
    )  # fmt: skip

    assert code == 2
    assert "server.crt is not valid for 203.0.113.9" in capsys.readouterr().err

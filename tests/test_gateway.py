"""Fleet-only gateway: hospitals reach the SuperLink only through nginx, which refuses Control.

Real processes on 127.0.0.1: the SuperLink (TLS + node auth) on a loopback port, nginx with
the config ``medfed certs gateway-config`` writes, and two SuperNodes that dial nginx. The
Control-API routes are enumerated from the installed SuperLink's own FastAPI app, not listed
by hand. nginx is a system dependency (Debian ``nginx-light``; ``make test`` installs it when
it can): without it these tests skip with one line, unless ``MEDFED_REQUIRE_GATEWAY=1``
(set by ``.ci/run``), where a missing nginx is a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
from flwr.superlink.main import create_app

from common.data.synthetic import generate_site
from deploy.certs import CA_CERT, add_site, site_key_paths
from deploy.commands import SuperNodeSpec, flwr_config_toml, register_command, run_command
from deploy.gateway import (
    FLEET_PREFIX,
    REFUSAL,
    SUPERNODE_FLEET_ROUTES,
    nginx_executable,
)
from medfed.testing.federation import Hospital, LocalFederation, flwr_env, online_nodes, run
from medfed.testing.timing import scaled
from server.rundir import METRICS_FILE, MODEL_FILE, REPORT_FILE
from tests.deploy_support import REPO_ROOT

pytestmark = pytest.mark.slow

SUPERLINK_PORT = 19120
GATEWAY_PORT = 19121
NODE_PORTS = (19122, 19123)
SPARE_NODE_PORT = 19124
SITES = ("hospital-a", "hospital-b")
ROUNDS = 2
GATEWAY_CONNECTION = "through-gateway"


def _require_nginx() -> str:
    nginx = nginx_executable()
    if nginx is None:
        reason = "nginx not installed (make test installs Debian nginx-light when run as root)"
        if os.environ.get("MEDFED_REQUIRE_GATEWAY") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return nginx


def _superlink_routes() -> dict[str, list[str]]:
    """Every route of the installed SuperLink (path -> methods), from its FastAPI app."""
    paths = create_app().openapi()["paths"]
    routes = {path: [m.upper() for m in methods if m != "head"] for path, methods in paths.items()}
    return {**routes, "/openapi.json": ["GET"], "/docs": ["GET"]}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    _require_nginx()
    root = tmp_path_factory.mktemp("gateway")
    hospitals = [
        Hospital(site, generate_site(root / "data" / site, i, seed=0, num_images=24, image_size=64))
        for i, site in enumerate(SITES)
    ]
    with LocalFederation(
        root / "federation",
        hospitals,
        SUPERLINK_PORT,
        NODE_PORTS,
        gateway_port=GATEWAY_PORT,
        approved_apps=[REPO_ROOT],
    ) as running:
        # a second flwr CLI connection that points at the gateway instead of the SuperLink
        home = root / "flwr-home-gateway"
        flwr_env(home)
        (home / "config.toml").write_text(
            flwr_config_toml(GATEWAY_CONNECTION, running.fleet_address, running.certs / CA_CERT)
        )
        yield running


def _gateway_env(federation: LocalFederation) -> dict[str, str]:
    return flwr_env(federation.root.parent / "flwr-home-gateway")


def test_hospitals_train_two_rounds_through_the_gateway(federation: LocalFederation) -> None:
    runs_dir = federation.root / "runs"
    config = {"federation.num-rounds": ROUNDS, "run.runs-dir": str(runs_dir), "run.name": "gw"}

    result = federation.run(REPO_ROOT, config, timeout=scaled(170))  # Control API on loopback

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (run_dir,) = runs_dir.glob("*-gw")
    rounds = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert len(rounds[-1]["train_sites"]) == len(SITES)
    assert (run_dir / MODEL_FILE).is_file() and (run_dir / REPORT_FILE).is_file()
    # the SuperNodes really went through nginx: its access log has their Fleet calls
    access = (federation.certs / "gateway" / "access.log").read_text()
    assert f"POST {FLEET_PREFIX}pull-messages" in access
    assert f"POST {FLEET_PREFIX}push-object" in access


def test_every_non_supernode_route_is_refused_by_the_gateway(federation: LocalFederation) -> None:
    routes = _superlink_routes()
    allowed = {FLEET_PREFIX + route for route in SUPERNODE_FLEET_ROUTES}
    assert allowed <= set(routes)  # the allow-list names real Fleet routes
    assert sum(path.startswith("/v1/control/") for path in routes) > 10
    ca = str(federation.certs / CA_CERT)
    gateway = httpx.Client(
        base_url=f"https://{federation.fleet_address}", verify=ca, timeout=scaled(30)
    )
    direct = httpx.Client(base_url=f"https://{federation.address}", verify=ca, timeout=scaled(30))
    body = {"content": b"", "headers": {"content-type": "application/protobuf"}}
    with gateway, direct:
        checked = 0
        for path, methods in routes.items():
            if path in allowed:
                continue
            for method in methods:
                kwargs = body if method == "POST" else {}
                refused = gateway.request(method, path, **kwargs)
                reached = direct.request(method, path, **kwargs)
                assert refused.status_code == 403 and REFUSAL in refused.text, (method, path)
                assert REFUSAL not in reached.text and reached.status_code != 403, (method, path)
                checked += 1
        # allowed routes are POST-only, and path tricks cannot reach Control through them:
        # nginx answers, or the trick lands on a fixed Fleet path (401 without a node key)
        for path in sorted(allowed):
            assert gateway.get(path).status_code == 403
        for trick in (
            f"{FLEET_PREFIX}..%2Fcontrol%2Flist-nodes",
            f"{FLEET_PREFIX}../control/list-nodes",
            f"{FLEET_PREFIX}pull-messages/../../control/list-nodes",
            "/v1/control/list-nodes/..%2F..%2Ffleet/pull-messages",
            "/V1/CONTROL/LIST-NODES",
        ):
            response = gateway.post(trick, **body)
            assert response.status_code in {400, 401, 403, 404}, trick
        assert direct.post("/v1/control/list-nodes", **body).status_code == 200
    assert checked >= len(routes) - len(allowed)


def test_flwr_cli_cannot_register_or_start_a_run_through_the_gateway(
    federation: LocalFederation,
) -> None:
    env = _gateway_env(federation)
    newcomer = add_site(federation.root / "newcomer", "newcomer")

    register = run(register_command(newcomer.public_key, GATEWAY_CONNECTION, "newcomer"), env, 60)
    start = run(run_command(REPO_ROOT, GATEWAY_CONNECTION, {"federation.num-rounds": 1}), env, 120)
    listing = run(["flwr", "supernode", "ls", GATEWAY_CONNECTION], env, 60)

    for result in (register, start, listing):
        assert result.returncode != 0
        assert "403" in result.stdout + result.stderr
    # ... while on the coordinator's loopback connection the same CLI works
    assert online_nodes(federation.env) == len(SITES)


def test_unregistered_key_is_refused_through_the_gateway(federation: LocalFederation) -> None:
    intruder = add_site(federation.root / "intruder", "intruder")
    node = federation.start_supernode(
        "intruder",
        SuperNodeSpec(
            superlink=federation.fleet_address,
            ca_cert=federation.certs / CA_CERT,
            private_key=intruder.private_key,
            data_path=federation.hospitals[0].data_path,
            site_id="intruder",
            partition_id=9,
            port=SPARE_NODE_PORT,
            state_dir=federation.state_dir("intruder"),
        ),
    )
    try:
        code = node.process.wait(timeout=scaled(90))
    finally:
        federation.stop_supernode("intruder")

    assert code != 0
    assert "Failed to activate SuperNode" in node.output()
    assert site_key_paths(federation.certs, SITES[0]).private_key.exists()

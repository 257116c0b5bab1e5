"""``medfed certs …``: the CA, the SuperLink certificate and each hospital's node key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# ``deploy`` (cryptography) is imported by the command that needs it, not to parse arguments.


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``certs`` subcommand group."""
    certs = commands.add_parser("certs", help="certificates and node keys for a deployment")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True)

    init = certs_commands.add_parser(
        "init", help="create a CA and the SuperLink's TLS certificate (coordinator)"
    )
    init.add_argument("directory", type=Path, help="certificate directory (created 0700)")
    init.add_argument(
        "--server-name",
        required=True,
        help="comma-separated DNS names and IP addresses the hospitals use to reach the "
        "SuperLink, e.g. fl.example.org,203.0.113.7 (localhost and 127.0.0.1 are added)",
    )
    init.add_argument(
        "--no-loopback",
        action="store_true",
        help="do not add localhost and 127.0.0.1 to the certificate",
    )
    init.set_defaults(func=run_init)

    site = certs_commands.add_parser(
        "add-site",
        help="create one hospital's node-authentication key pair and privacy-ledger key",
    )
    site.add_argument("directory", type=Path, help="certificate directory")
    site.add_argument("site_id", help="stable site id, e.g. hospital-a")
    site.set_defaults(func=run_add_site)

    gateway = certs_commands.add_parser(
        "gateway-config",
        help="write the nginx config that exposes only the Fleet API to the hospitals",
    )
    gateway.add_argument("directory", type=Path, help="certificate directory (from init)")
    gateway.add_argument(
        "--listen", required=True, help="HOST:PORT the hospitals connect to, e.g. 0.0.0.0:9093"
    )
    gateway.add_argument(
        "--upstream", required=True, help="the SuperLink's loopback HOST:PORT, e.g. 127.0.0.1:9092"
    )
    gateway.add_argument(
        "--i-know-control-api-is-exposed",
        dest="exposed",
        action="store_true",
        help="allow a non-loopback SuperLink address (its Control API is then reachable)",
    )
    gateway.set_defaults(func=run_gateway_config)


def run_init(args: argparse.Namespace) -> int:
    """Write ca.crt/ca.key/server.crt/server.key and say what goes where."""
    from deploy.certs import init_authority, parse_server_names

    names = parse_server_names(args.server_name, include_loopback=not args.no_loopback)
    files = init_authority(args.directory, names)
    print(f"CA certificate      {files.ca_cert}  (give to every hospital)")
    print(f"CA private key      {files.ca_key}  (0600, keep offline at the coordinator)")
    print(f"SuperLink cert      {files.server_cert}  for {', '.join(files.server_names)}")
    print(f"SuperLink key       {files.server_key}  (0600, coordinator only)")
    print(
        "Next: each hospital makes its own node key on its own machine "
        "(medfed certs add-site KEYS_DIR SITE_ID) and sends you only its .pub file, "
        "which you register with flwr supernode register"
    )
    return 0


def run_add_site(args: argparse.Namespace) -> int:
    """Write sites/SITE.key (0600), sites/SITE.pub and the ledger key pair; print the
    registration command."""
    from deploy.certs import add_site

    files = add_site(args.directory, args.site_id)
    print(f"site '{files.site_id}' private key  {files.private_key}  (0600, stays at the site)")
    print(f"site '{files.site_id}' public key   {files.public_key}")
    print(
        f"site '{files.site_id}' ledger key    {files.ledger_key}  (0600, stays at the site; "
        "its node config: ledger-key=<this file's path there>)"
    )
    print(
        f"site '{files.site_id}' ledger public key  {files.ledger_public_key}  "
        "(give it to whoever verifies the site's privacy ledger)"
    )
    print(
        f"Send {files.public_key.name} (only) to the coordinator, who registers its copy "
        "before the site starts its SuperNode:\n"
        f"  flwr supernode register {files.public_key.resolve()} medfed --name {files.site_id}"
    )
    return 0


def run_gateway_config(args: argparse.Namespace) -> int:
    """Write DIR/gateway/nginx.conf and print how to start nginx with it."""
    from deploy.gateway import (
        Endpoint,
        GatewaySpec,
        exposure_warning,
        nginx_command,
        write_gateway_config,
    )

    spec = GatewaySpec(
        certs=args.directory,
        listen=Endpoint.parse(args.listen, "--listen"),
        upstream=Endpoint.parse(args.upstream, "--upstream"),
        allow_exposed_upstream=args.exposed,
    )
    path = write_gateway_config(spec)
    warning = exposure_warning(spec)
    if warning:
        print(f"medfed: warning: {warning}", file=sys.stderr)
    print(f"gateway config      {path}")
    print(f"hospitals connect to {spec.listen}; SuperLink stays on {spec.upstream}")
    print("start it with:  " + " ".join(nginx_command(path)))
    return 0

"""A Fleet-only TLS gateway (nginx) in front of the SuperLink: hospitals cannot start runs.

In flwr 1.42 the SuperLink serves the Fleet API (``/v1/fleet/*``, what SuperNodes use), the
Control API (``/v1/control/*``: start runs, register nodes; no login in open-source Flower)
and the Runtime API on one HTTPS port. Every hospital trusts the CA, so any hospital that
can reach that port could start a run whose code then executes at every other hospital.

The coordinator therefore binds the SuperLink to loopback and lets the hospitals reach it
only through nginx, configured by ``gateway_config`` to forward exactly the Fleet routes a
SuperNode calls when node authentication is on (``SUPERNODE_FLEET_ROUTES``, read off
``flwr.supernode.fleet_http_connection``: no ``register-node``/``unregister-node``, which
a SuperNode uses only without node authentication), as POST only, each to a fixed upstream
path (``..`` or ``%2F`` tricks cannot reach another route). Everything else gets 403 from
nginx without touching the SuperLink. TLS ends at nginx with the SuperLink's certificate,
and the hop to the SuperLink is TLS again, verified against the federation's CA.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from common.errors import MedfedError
from deploy.certs import CA_CERT, SERVER_CERT, SERVER_KEY

GATEWAY_DIR = "gateway"
CONFIG_FILE = "nginx.conf"
REFUSAL = "medfed gateway: only the Fleet API is served here"
SUPERNODE_FLEET_ROUTES = (
    "activate-node",
    "send-node-heartbeat",
    "pull-messages",
    "push-messages",
    "get-run",
    "get-fab",
    "pull-object",
    "push-object",
    "confirm-message-received",
    "deactivate-node",
)
FLEET_PREFIX = "/v1/fleet/"
MAX_BODY = "64m"  # model chunks are up to ~5 MB per push-object; nginx's default is 1 MB
EXPOSED_WARNING = (
    "the SuperLink upstream {upstream} is not a loopback address: its Control API (start "
    "runs, register nodes) is then reachable without this gateway"
)


class GatewayError(MedfedError):
    """A gateway configuration that would not work or would not protect anything."""


@dataclass(frozen=True)
class Endpoint:
    """``host:port`` (IPv6 in brackets)."""

    host: str
    port: int

    @classmethod
    def parse(cls, value: str, what: str) -> Endpoint:
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise GatewayError(f"{what} must be HOST:PORT, got '{value}'")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_names(cert_path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return list(san.get_values_for_type(x509.DNSName)), ips


def _covers(host: str, dns: list[str], ips: list[str]) -> bool:
    try:
        return str(ipaddress.ip_address(host)) in ips
    except ValueError:
        return host.lower() in dns


@dataclass(frozen=True)
class GatewaySpec:
    """Where the gateway listens, where the SuperLink is, and the certificate directory."""

    certs: Path
    listen: Endpoint
    upstream: Endpoint
    allow_exposed_upstream: bool = False

    @property
    def directory(self) -> Path:
        return self.certs / GATEWAY_DIR


def exposure_warning(spec: GatewaySpec) -> str | None:
    """Why this spec leaves the Control API reachable (``None`` if the upstream is loopback)."""
    if is_loopback(spec.upstream.host):
        return None
    return EXPOSED_WARNING.format(upstream=spec.upstream)


def check_spec(spec: GatewaySpec) -> str:
    """Validate the spec against the certificates; return the upstream TLS name to verify."""
    warning = exposure_warning(spec)
    if warning and not spec.allow_exposed_upstream:
        raise GatewayError(
            f"{warning}; bind the SuperLink to 127.0.0.1 or pass --i-know-control-api-is-exposed"
        )
    for name in (CA_CERT, SERVER_CERT, SERVER_KEY):
        if not (spec.certs / name).is_file():
            raise GatewayError(f"{spec.certs / name} is missing: run 'medfed certs init' first")
    dns, ips = _server_names(spec.certs / SERVER_CERT)
    if spec.listen.host not in {"0.0.0.0", "::"} and not _covers(spec.listen.host, dns, ips):
        raise GatewayError(
            f"{SERVER_CERT} is not valid for {spec.listen.host} (it names "
            f"{', '.join(dns + ips)}): re-run 'medfed certs init' with that --server-name"
        )
    if not dns:
        raise GatewayError(f"{SERVER_CERT} names no DNS name for nginx to verify the SuperLink by")
    return "localhost" if "localhost" in dns else dns[0]


def gateway_config(spec: GatewaySpec) -> str:
    """The nginx configuration (a complete ``nginx.conf``; runs in the foreground)."""
    tls_name = check_spec(spec)
    certs = spec.certs.resolve()
    work = spec.directory.resolve()
    upstream = f"https://{spec.upstream}"
    locations = "\n".join(
        f"""        location = {FLEET_PREFIX}{route} {{
            limit_except POST {{ deny all; }}
            proxy_pass {upstream}{FLEET_PREFIX}{route};
        }}"""
        for route in SUPERNODE_FLEET_ROUTES
    )
    return f"""# medfed gateway: hospitals reach only the Fleet API routes a SuperNode uses.
# Written by `medfed certs gateway-config`; start with:
#   nginx -c {work / CONFIG_FILE} -e {work / "error.log"}
daemon off;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;

events {{
    worker_connections 512;
}}

http {{
    access_log {work / "access.log"};
    server_tokens off;
    client_body_temp_path {work / "tmp-body"};
    proxy_temp_path {work / "tmp-proxy"};
    fastcgi_temp_path {work / "tmp-fastcgi"};
    uwsgi_temp_path {work / "tmp-uwsgi"};
    scgi_temp_path {work / "tmp-scgi"};

    server {{
        listen {spec.listen} ssl;
        ssl_certificate {certs / SERVER_CERT};
        ssl_certificate_key {certs / SERVER_KEY};
        ssl_protocols TLSv1.2 TLSv1.3;

        client_max_body_size {MAX_BODY};
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 120s;
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 2;
        proxy_ssl_trusted_certificate {certs / CA_CERT};
        proxy_ssl_name {tls_name};
        proxy_ssl_server_name on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;

{locations}

        location / {{
            default_type text/plain;
            return 403 "{REFUSAL}\\n";
        }}
    }}
}}
"""


def write_gateway_config(spec: GatewaySpec) -> Path:
    """Write ``DIR/gateway/nginx.conf`` (replacing an older one: it holds no secrets)."""
    text = gateway_config(spec)
    spec.directory.mkdir(mode=0o700, exist_ok=True)
    path = spec.directory / CONFIG_FILE
    path.write_text(text)
    return path


def nginx_executable() -> str | None:
    """The nginx binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    fallback = Path("/usr/sbin/nginx")
    return str(fallback) if fallback.is_file() else None


def nginx_command(config: Path, nginx: str = "nginx") -> list[str]:
    """The foreground nginx command for a written gateway config."""
    config = config.resolve()
    return [nginx, "-c", str(config), "-e", str(config.parent / "error.log")]

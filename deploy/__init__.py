"""Real deployment: what a coordinator and the hospitals run, with TLS and node authentication.

- ``certs``: the federation's CA, the SuperLink certificate, each hospital's node key.
- ``commands``: the exact Flower command lines (SuperLink, SuperNode, register, run).
- ``gateway``: the nginx config that exposes only the SuperNode's Fleet API routes.

``deploy`` imports ``common`` only; ``medfed`` (``medfed certs``, ``medfed.testing``) imports
it. The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from deploy.certs import add_site, init_authority
    from deploy.commands import SuperLinkSpec, SuperNodeSpec, superlink_command, supernode_command
    from deploy.gateway import GatewaySpec, gateway_config

__all__ = [
    "GatewaySpec",
    "SuperLinkSpec",
    "SuperNodeSpec",
    "add_site",
    "gateway_config",
    "init_authority",
    "superlink_command",
    "supernode_command",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "GatewaySpec": "deploy.gateway",
        "SuperLinkSpec": "deploy.commands",
        "SuperNodeSpec": "deploy.commands",
        "add_site": "deploy.certs",
        "gateway_config": "deploy.gateway",
        "init_authority": "deploy.certs",
        "superlink_command": "deploy.commands",
        "supernode_command": "deploy.commands",
    },
)

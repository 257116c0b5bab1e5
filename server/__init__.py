"""The coordinator: the ServerApp that samples sites, validates and aggregates their updates.

Flower loads the ServerApp object as ``server.app:app`` (pyproject
``[tool.flwr.app.components]``); ``build_server_app()`` builds one. Modules: ``app`` (picks
the round engine), ``lifecycle`` (``RunLifecycle``: run directory, checkpoints, resume,
report around any engine), ``rounds`` (the plain engine: a Flower strategy), ``secagg`` (the
SecAgg+ engine), ``strategies`` (registry: ``build_strategy``, Flower's strategies wrapped once by
``guarded.GuardedStrategy``), ``validation`` (pure checks of each update), ``recorder`` and
``console`` (per-round metrics), ``declines``, ``attestations`` (the copies of the sites'
signed privacy records), ``checkpoint`` and ``rundir`` (resume, run directory), ``report``
(the HTML run report: ``report_data`` derives what it shows from the run directory,
``report_plots`` draws it, ``report_format`` writes its numbers, the jinja2 template is
``report_template``).

``server`` imports ``common`` only, never ``client``. The names below are imported on first
use (they need torch and Flower).
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from server.app import build_server_app, run_federation
    from server.lifecycle import RunLifecycle
    from server.strategies import build_strategy

__all__ = ["RunLifecycle", "build_server_app", "build_strategy", "run_federation"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RunLifecycle": "server.lifecycle",
        "build_server_app": "server.app",
        "build_strategy": "server.strategies",
        "run_federation": "server.app",
    },
)

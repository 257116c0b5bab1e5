"""Many simulated hospitals on one machine, with Flower's simulation engine.

``load_scenario`` reads a named scenario (``scenarios/*.toml``, shipped in the wheel) into a
``MedfedConfig``; ``run_simulated_federation`` runs the real ClientApp and ServerApp with one
virtual node per hospital. Modules: ``scenario``, ``runner``, ``partition`` (IID / Dirichlet
/ quantity splits of one pool's labels), ``shift`` (per-site acquisition style), ``sites``
(a simulated node's data), ``dropout`` (sites that fail to answer).

``simulations`` may import ``common``, ``client`` and ``server``; only ``medfed`` imports it.
The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from simulations.runner import run_simulated_federation
    from simulations.scenario import available_scenarios, load_scenario

__all__ = ["available_scenarios", "load_scenario", "run_simulated_federation"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "available_scenarios": "simulations.scenario",
        "load_scenario": "simulations.scenario",
        "run_simulated_federation": "simulations.runner",
    },
)

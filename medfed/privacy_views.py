"""What ``medfed privacy`` prints: the plan table, a ledger's verdict, a site's spend.

Computation lives in ``common.planning`` (the sites' own planning code) and
``common.ledger``; this module turns results into rich tables or JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from rich.console import Console
from rich.progress import track
from rich.table import Table

from common.config import MedfedConfig, Scalar
from common.errors import ConfigError
from common.planning import RoundPlan, plan_round, projected_epsilons


@dataclass(frozen=True)
class PlanProjection:
    """A run's plan at one site and the epsilon it reaches after each round."""

    config: MedfedConfig
    site_size: int
    plan: RoundPlan
    epsilons: list[tuple[int, float]]

    def to_json(self) -> dict[str, object]:
        """JSON-safe summary."""
        privacy = self.config.privacy
        return {
            "site_size": self.site_size,
            "accountant": privacy.accountant,
            "delta": privacy.delta,
            "target_epsilon": privacy.target_epsilon,
            "batch_size": self.plan.batch_size,
            "sample_rate": self.plan.sample_rate,
            "steps_per_round": self.plan.steps,
            "noise_multiplier": self.plan.noise_multiplier,
            "rounds": [{"round": r, "epsilon": e} for r, e in self.epsilons],
        }


def project_plan(overrides: Mapping[str, Scalar], site_size: int) -> PlanProjection:
    """Plan a round as a site with ``site_size`` examples would, and project every round."""
    if site_size < 1:
        raise ConfigError(f"--site-size must be at least 1, got {site_size}")
    config = MedfedConfig().replace(**overrides)
    rounds = config.federation.num_rounds
    plan = plan_round(site_size, config.train, config.privacy, planned_rounds=rounds)
    epsilons = list(
        track(
            projected_epsilons(plan, rounds, config.privacy),
            total=rounds,
            description="accounting",
            transient=True,
            console=Console(stderr=True),
        )
    )
    return PlanProjection(config, site_size, plan, epsilons)


def print_plan(projection: PlanProjection, *, as_json: bool = False) -> None:
    """The plan as a rich table (or JSON)."""
    if as_json:
        print(json.dumps(projection.to_json(), indent=2))
        return
    plan, privacy = projection.plan, projection.config.privacy
    console = Console()
    console.print(
        f"site of {projection.site_size} examples: batch {plan.batch_size}, "
        f"sample rate {plan.sample_rate:.4g}, {plan.steps} steps per round, "
        f"noise multiplier {plan.noise_multiplier:.4f} "
        f"({privacy.accountant}, δ={privacy.delta:g}, target ε={privacy.target_epsilon:g})"
    )
    table = Table(title="projected ε after each round")
    table.add_column("round", justify="right")
    table.add_column("steps so far", justify="right")
    table.add_column("ε", justify="right")
    table.add_column("within target", justify="center")
    for done, epsilon in projection.epsilons:
        within = "yes" if epsilon <= privacy.target_epsilon else "[red]no[/red]"
        table.add_row(str(done), str(done * plan.steps), f"{epsilon:.4f}", within)
    console.print(table)

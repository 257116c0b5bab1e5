"""A site's privacy budget: decide before each round whether to train, record after it.

Two caps, both checked against the spend *after* the planned round (``RoundPlan``):
- the run's ``privacy.target-epsilon`` (the noise is calibrated to reach it exactly at the
  last planned round, so a run that asks for extra rounds is refused them);
- the site's own lifetime budget, node-config ``epsilon-budget``, over every run recorded
  in its state directory (a server cannot raise it). A site with such a budget also refuses
  a run with DP switched off.
A refused round is a *decline*, not an error: the site replies with ``train-status`` =
``STATUS_DECLINED_BUDGET`` and zero examples, and the server carries on without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from client.privacy_state import PrivacyStateStore, RunSpend, site_budget_of, state_dir_for
from common.config import MedfedConfig, PrivacyConfig
from common.planning import RoundPlan
from common.privacy import (
    BudgetCheck,
    HistoryEntry,
    check_budget,
    epsilon_of,
    noise_multiplier_for,
)


@dataclass(frozen=True)
class SitePrivacy:
    """One site's privacy bookkeeping for one run."""

    store: PrivacyStateStore
    run_key: str
    privacy: PrivacyConfig
    site_budget: float | None

    @classmethod
    def open(
        cls,
        node_config: Mapping[str, object],
        config: MedfedConfig,
        site_id: str,
        run_key: str,
    ) -> SitePrivacy:
        """The state store and budget of the site named ``site_id``."""
        store = PrivacyStateStore(state_dir_for(node_config, config, site_id))
        return cls(store, run_key, config.privacy, site_budget_of(node_config))

    def _run(self) -> RunSpend:
        empty = RunSpend(self.privacy.accountant, self.privacy.delta, [])
        return self.store.run(self.run_key) or empty

    def history(self) -> list[HistoryEntry]:
        """This run's accountant history so far."""
        return list(self._run().history)

    def calibrate(
        self,
        *,
        target_epsilon: float,
        delta: float,
        sample_rate: float,
        steps: int,
        accountant: str,
    ) -> float:
        """``noise_multiplier_for``, remembered for this run in the state directory."""
        key = f"{accountant}:eps={target_epsilon!r}:delta={delta!r}:q={sample_rate!r}:T={steps}"
        run = self._run()
        if key not in run.calibration:
            noise = noise_multiplier_for(
                target_epsilon=target_epsilon,
                delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
            calibration = {**run.calibration, key: noise}
            self.store.record(self.run_key, replace(run, calibration=calibration))
            return noise
        return run.calibration[key]

    def spent(self) -> float:
        """This run's epsilon so far."""
        return epsilon_of(
            self.history(), delta=self.privacy.delta, accountant=self.privacy.accountant
        )

    def check(self, plan: RoundPlan) -> BudgetCheck:
        """May the site take the planned round?"""
        if not self.privacy.enabled:
            if self.site_budget is None:
                return BudgetCheck(True, 0.0, math.nan)
            return BudgetCheck(
                False,
                0.0,
                math.nan,
                f"the run has DP switched off and the site has an epsilon budget "
                f"({self.site_budget:g})",
            )
        return check_budget(
            run_history=self.history(),
            other_runs=self.store.other_runs(self.run_key),
            next_round=plan.history_entry(),
            delta=self.privacy.delta,
            accountant=self.privacy.accountant,
            run_budget=self.privacy.target_epsilon,
            site_budget=self.site_budget,
        )

    def record(self, history: list[HistoryEntry]) -> None:
        """Persist this run's history (call before the reply leaves the site)."""
        run = self._run()
        spend = RunSpend(self.privacy.accountant, self.privacy.delta, history, run.calibration)
        self.store.record(self.run_key, spend)

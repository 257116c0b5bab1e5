"""Operator-facing console output: a rich progress bar over rounds and one line per round."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.numbers import number, ratio
from server.recorder import RoundRecord
from server.report_data import no_site_test_split


def operating_point(record: RoundRecord) -> str:
    """``sens 0.800 spec 0.976 @0.10`` (binary: at the validation-chosen threshold)."""
    text = f"sens {ratio(record.sensitivity)} spec {ratio(record.specificity)}"
    if record.threshold is not None:
        text += f" @{record.threshold:.2f}"
    return text


def round_line(record: RoundRecord, num_rounds: int) -> str:
    """One line: round, loss, accuracy, ROC-AUC, sensitivity and specificity at the operating
    threshold (pooled over the sites' test splits; "no site test split" when they hold none),
    max epsilon, participating sites; with a public pool, the official test
    split's AUC and balanced accuracy (server side, threshold chosen on official val).

    Sites that declined (privacy budget / site policy), failed, timed out or whose update was
    rejected are named after the ones that took part, then those sampled for evaluation that
    gave no result; a round with too few valid updates says
    that the global model was kept.
    """
    eps = "off" if record.epsilon_max is None else number(record.epsilon_max)
    pooled = (
        "no site test split"
        if no_site_test_split(record.site_metrics)
        else f"loss {number(record.loss, 4)}  acc {ratio(record.accuracy)}"
        f"  auc {ratio(record.auc)}  {operating_point(record)}"
    )
    line = (
        f"round {record.round}/{num_rounds}  {pooled}"
        f"  eps(max) {eps}  sites {len(record.train_sites)} [{', '.join(record.train_sites)}]"
    )
    if record.official:
        official = record.official
        line += (
            f"  official test auc {ratio(official.get('auc'))}"  # type: ignore[arg-type]
            f" bacc {ratio(official.get('balanced_accuracy'))}"  # type: ignore[arg-type]
        )
    for why, sites in _declined_by_reason(record).items():
        line += f"  declined ({why}) [{', '.join(sites)}]"
    if record.failed:
        line += f"  failed [{', '.join(record.failed)}]"
    if record.rejected:
        line += f"  rejected [{', '.join(record.rejected)}]"
    if record.eval_missed:
        line += f"  not evaluated [{', '.join(record.eval_missed)}]"
    if not record.aggregated:
        line += "  (too few valid updates: global model kept)"
    return line


def _declined_by_reason(record: RoundRecord) -> dict[str, list[str]]:
    """Declined sites grouped by reason; sites without one (older records): privacy budget."""
    grouped: dict[str, list[str]] = {}
    for site in record.declined_sites:
        grouped.setdefault(record.declined.get(site, "privacy budget"), []).append(site)
    return grouped


class RoundProgress:
    """Context manager showing a progress bar and printing each finished round."""

    def __init__(self, num_rounds: int, console: Console | None = None, completed: int = 0) -> None:
        self.num_rounds = num_rounds
        self.console = console or Console()
        self._progress = Progress(
            TextColumn("[bold]federated rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("rounds", total=num_rounds, completed=completed)

    def __enter__(self) -> RoundProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def on_round(self, record: RoundRecord) -> None:
        """Print the round line and advance the bar."""
        self._progress.console.print(
            round_line(record, self.num_rounds), highlight=False, markup=False, soft_wrap=True
        )
        self._progress.advance(self._task)

"""report.html: every section and site on one self-contained page, for new and older runs.

The fixture runs (``tests/report_fixtures.py``) carry issue 13's contract fields (curves,
calibration, fairness, threshold) or, for an older run, lack them; a slow test renders the
page of a real two-round simulation.
"""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from common.config import MedfedConfig
from medfed.cli import main
from server import report_format as fmt
from server.report import render_report, write_run_report
from tests.report_fixtures import SITES, contract_run, old_run

SECTIONS = (
    "overview",
    "settings",
    "metrics",
    "roc",
    "confusion",
    "calibration",
    "privacy",
    "fairness",
    "participation",
)


class _Sections(HTMLParser):
    """The visible text of each ``<section id=...>`` and every src/href value."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.links: list[str] = []
        self.svgs: dict[str, int] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self._current = values.get("id")
            self.text.setdefault(self._current or "", "")
        if tag == "svg" and self._current:
            self.svgs[self._current] = self.svgs.get(self._current, 0) + 1
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current:
            self.text[self._current] += data


def _parse(page: str) -> _Sections:
    parser = _Sections()
    parser.feed(page)
    parser.text = {k: " ".join(v.split()) for k, v in parser.text.items()}
    return parser


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_self_contained(page: str) -> None:
    parsed = _parse(page)
    assert parsed.links, "expected in-page links (navigation)"
    assert all(link.startswith("#") for link in parsed.links), parsed.links
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page
    assert not re.search(r"""url\(\s*['"]?(?!#)""", page)  # only in-page url(#clip) refs
    assert "<script" not in page
    assert "http:" not in page and "https:" not in page  # not even a namespace URI


def test_contract_run_report_shows_every_section_and_site(tmp_path: Path) -> None:
    # Prepare
    run_dir = contract_run(tmp_path / "run")
    final = _records(run_dir)[-1]

    # Execute
    page = write_run_report(run_dir).read_text()

    # Assert
    parsed = _parse(page)
    assert set(SECTIONS) <= set(parsed.text)
    for section in ("settings", "metrics", "privacy", "fairness"):
        for site in SITES:
            assert site in parsed.text[section], (section, site)
    assert {"metrics": 1, "roc": 1, "calibration": 1, "privacy": 1}.items() <= parsed.svgs.items()
    overview = parsed.text["overview"]
    for metric in ("auc", "sensitivity", "specificity", "f1"):
        assert fmt.rate(final[metric]) in overview
    assert fmt.rate(final["threshold"]) in overview and "youden" in overview
    roc = parsed.text["roc"]
    assert "operating point" in roc.lower() and "not recorded" not in roc
    assert f"AUC {final['curves']['test']['auc']:.3f}" in page  # the legend of the ROC plot
    (tn, fp), (fn, tp) = final["confusion"]
    confusion = parsed.text["confusion"]
    assert "true normal" in confusion and "predicted opacity" in confusion
    assert re.search(rf"{tn}\s*{fp}\s*{tn + fp}\s*true opacity\s*{fn}\s*{tp}", confusion)
    assert "not recorded" not in parsed.text["calibration"]
    fairness = final["fairness"]
    for group in fairness["groups"]:
        assert group in parsed.text["fairness"]
    flagged = [
        gap
        for kind in ("groups", "sites")
        for gap in fairness["max_gap"][kind].values()
        if gap["value"] > fairness["flag_gap"]
    ]
    assert flagged, "the fixture should have a gap above flag_gap"
    assert page.count("flagged") >= len(flagged)
    for gap in flagged:
        between = " and ".join(gap["between"])
        assert f"{fmt.rate(gap['value'])} between {between}" in parsed.text["fairness"]
    assert fairness["suppressed"], "the fixture should have a group below min_group"
    assert (
        f"Suppressed (fewer than 10 images): {', '.join(fairness['suppressed'])}"
        in (parsed.text["fairness"])
    )
    participation = parsed.text["participation"]
    assert "privacy budget" in participation and "exceeds 10 x the round's median" in participation
    assert "δ = 1e-05" in page and "0.000" not in parsed.text["privacy"]
    _assert_self_contained(page)


def test_older_run_without_contract_fields_says_what_was_not_recorded(tmp_path: Path) -> None:
    # Prepare
    run_dir = old_run(tmp_path / "old")

    # Execute
    page = write_run_report(run_dir, tmp_path / "old.html").read_text()

    # Assert
    parsed = _parse(page)
    for section in ("roc", "calibration", "fairness"):
        assert "not recorded for this run" in parsed.text[section], section
    assert "operating threshold not recorded" in parsed.text["confusion"]
    for site in SITES:
        assert site in parsed.text["settings"] and site in parsed.text["metrics"]
    assert "<svg" in page  # by-round metrics and ε still plotted
    _assert_self_contained(page)


def test_records_with_missing_fields_and_declined_reasons_render() -> None:
    # Prepare: the shape of a round written before site reasons and per-site counts existed
    site = {"auc": 0.91, "sensitivity": 0.9, "specificity": 0.6, "confusion": [[3, 2], [1, 9]]}
    rounds: list[dict[str, object]] = [
        {
            "round": 1,
            "auc": 0.9,
            "epsilon": {"hospital-a": 2.0},
            "train_sites": ["hospital-a"],
            "declined_sites": ["hospital-b"],
            "confusion": [[3, 2], [1, 9]],
            "site_metrics": {"hospital-a": site},
        }
    ]

    # Execute
    names_only = _parse(render_report("run", {"privacy.delta": 1e-5}, rounds))
    rounds[0]["declined"] = {"hospital-b": "app not approved"}
    with_reason = _parse(render_report("run", {}, rounds))

    # Assert
    assert re.search(r"hospital-b\s*declined\s*not recorded", names_only.text["participation"])
    assert re.search(r"hospital-b\s*declined\s*app not approved", with_reason.text["participation"])
    assert re.search(r"true class 1\s*1\s*9\s*10", with_reason.text["confusion"])
    assert "1e-05" in names_only.text["settings"]


def test_multiclass_run_labels_the_confusion_matrix_with_class_names(tmp_path: Path) -> None:
    # Prepare
    record = {
        "round": 1,
        "auc": 0.8,
        "threshold": None,
        "threshold_rule": "argmax",
        "confusion": [[5, 1, 0], [2, 6, 1], [0, 1, 7]],
        "curves": {"test": {"classes": {}}},
    }
    grid = [i / 100 for i in range(101)]
    for k, name in enumerate(("normal", "pneumonia", "covid")):  # one-vs-rest counts
        positives, negatives = 8, 16
        tp = [round(positives * (1 - t) ** (k + 1)) for t in grid]
        fp = [round(negatives * (1 - t) ** 3) for t in grid]
        record["curves"]["test"]["classes"][name] = {
            "thresholds": grid,
            "tp": tp,
            "fp": fp,
            "fn": [positives - v for v in tp],
            "tn": [negatives - v for v in fp],
            "auc": 0.6 + 0.1 * k,
        }
    config = {"data.class-names": "normal,pneumonia,covid", "privacy.enabled": False}

    # Execute
    page = render_report("run", config, [record])
    parsed = _parse(page)

    # Assert
    assert re.search(r"true covid\s*0\s*1\s*7\s*8", parsed.text["confusion"])
    assert "Arg-max" in parsed.text["confusion"]
    assert "off for this run" in parsed.text["privacy"]
    assert parsed.svgs.get("roc") == 1 and "No operating threshold" in parsed.text["roc"]
    for name, auc in (("normal", 0.6), ("pneumonia", 0.7), ("covid", 0.8)):
        assert f"{name} vs rest (AUC {auc:.3f})" in page


@pytest.mark.parametrize(
    ("value", "rate", "number"),
    [
        (1e-5, "1e-05", "1e-05"),
        (0.0, "0.000", "0"),
        (0.8974, "0.897", "0.8974"),
        (None, "\u2013", "\u2013"),
    ],
)
def test_numbers_keep_their_information(value: float | None, rate: str, number: str) -> None:
    assert fmt.rate(value) == rate
    assert fmt.number(value) == number


def test_medfed_report_rewrites_the_page_and_refuses_a_non_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    run_dir = contract_run(tmp_path / "run", rounds=2)

    # Execute
    code = main(["report", str(run_dir)])
    out_code = main(["report", str(run_dir), "--out", str(tmp_path / "copy.html")])
    capsys.readouterr()
    bad_code = main(["report", str(tmp_path)])
    error = capsys.readouterr().err

    # Assert
    assert code == 0 and out_code == 0
    assert (run_dir / "report.html").read_text() == (tmp_path / "copy.html").read_text()
    assert bad_code == 2
    assert error.count("\n") == 1 and error.startswith("medfed: error: ")
    assert "not a medfed run directory" in error


@pytest.mark.slow
def test_report_of_a_real_simulated_run(small_config: MedfedConfig) -> None:
    # Prepare
    from simulations.runner import run_simulated_federation

    config = small_config.replace(**{"privacy.accountant": "rdp", "federation.num-sites": 3})

    # Execute
    run_dir = run_simulated_federation(config, console=Console(file=io.StringIO()))
    written = (run_dir / "report.html").read_text()
    rendered = write_run_report(run_dir, run_dir / "again.html").read_text()

    # Assert
    for page in (written, rendered):
        parsed = _parse(page)
        assert set(SECTIONS) <= set(parsed.text)
        for site in ("hospital-a", "hospital-b", "hospital-c"):
            for section in ("settings", "metrics", "privacy"):
                assert site in parsed.text[section], (section, site)
        _assert_self_contained(page)


def test_a_round_every_site_declined_and_a_run_without_rounds_render() -> None:
    # Prepare: the round line of an app no site approved (nothing trained or evaluated)
    declined = {"hospital-a": "app not approved", "hospital-b": "app not approved"}
    record = {
        "round": 1,
        "train_sites": [],
        "eval_sites": [],
        "auc": None,
        "epsilon_max": None,
        "epsilon": {},
        "aggregated": False,
        "declined_sites": sorted(declined),
        "declined": declined,
        "confusion": [],
        "site_metrics": {},
    }

    # Execute
    declined_page = _parse(render_report("run", {"privacy.target-epsilon": 8.0}, [record]))
    empty_page = _parse(render_report("run", {}, []))

    # Assert
    for site in declined:
        assert re.search(
            rf"{site}\s*declined\s*app not approved", declined_page.text["participation"]
        )
        assert site in declined_page.text["settings"]
    assert "No site reported ε" in declined_page.text["privacy"]
    assert "No round completed" in empty_page.text["overview"]
    assert set(SECTIONS) <= set(empty_page.text)


def test_a_run_scored_on_an_official_split_shows_it_beside_the_pooled_figures() -> None:
    """Regression: a MedMNIST scenario's headline was the sites' pooled test AUC (0.902 on
    a BreastMNIST run whose official test AUC, the figure comparable with published ones, was
    0.827, or 0.839 at its best-val round) and the official figures were only a plot line."""

    def official(val_auc: float, auc: float) -> dict[str, object]:
        return {"val_auc": val_auc, "auc": auc, "balanced_accuracy": 0.75, "sensitivity": 0.8,
                "specificity": 0.7, "threshold": 0.42, "n_test": 156}  # fmt: skip

    rounds: list[dict[str, object]] = [
        {"round": 1, "auc": 0.88, "official": official(0.90, 0.81)},
        {"round": 2, "auc": 0.90, "official": official(0.95, 0.84)},
        {"round": 3, "auc": 0.902, "official": official(0.93, 0.83)},
    ]

    page = _parse(render_report("run", {"privacy.enabled": False}, rounds))
    without = _parse(render_report("run", {}, [{"round": 1, "auc": 0.9}]))
    # a round nothing was evaluated in records an empty official dict (a failing run's report)
    nothing = _parse(render_report("run", {}, [{"round": 1, "auc": None, "official": {}}]))

    overview = page.text["overview"]
    assert "pooled test metrics of the sites' own test splits" in overview
    assert re.search(
        r"final round 3\s*0\.930\s*0\.830\s*0\.750\s*0\.800\s*0\.700\s*0\.420\s*156", overview
    )
    assert re.search(r"round 2: best official val AUC\s*0\.950\s*0\.840", overview)
    assert "official test split" not in without.text["overview"]
    assert "own test splits" not in without.text["overview"]
    assert "official test split" not in nothing.text["overview"]


def test_a_run_whose_sites_hold_no_test_split_says_so_instead_of_empty_figures(
    tmp_path: Path,
) -> None:
    """Regression: with ``data.test-fraction = 0`` (every site trains on its whole shard, the
    server scores the official split) the round lines, the closing table and the report's
    headline were rows of "n/a" and dashes, with "threshold 0.50 (no validation data)"."""
    from server.console import round_line
    from server.lifecycle import RunSummary, print_summary
    from server.recorder import RoundRecord

    empty = {"num_examples": 0, "auc": None, "confusion": [[0, 0], [0, 0]]}
    official = {"val_auc": 0.9, "auc": 0.8, "balanced_accuracy": 0.7, "sensitivity": 0.75,
                "specificity": 0.65, "threshold": 0.42, "n_test": 156}  # fmt: skip
    record = RoundRecord(
        round=2, train_sites=["hospital-a", "hospital-b"], eval_sites=["hospital-a", "hospital-b"],
        train_loss=0.4, loss=float("nan"), accuracy=float("nan"), auc=float("nan"),
        epsilon_max=3.5, epsilon={"hospital-a": 3.5, "hospital-b": 3.25},
        site_auc={"hospital-a": float("nan"), "hospital-b": float("nan")},
        site_accuracy={"hospital-a": float("nan"), "hospital-b": float("nan")}, elapsed_s=1.0,
        site_metrics={"hospital-a": empty, "hospital-b": empty}, threshold=0.5,
        threshold_rule="youden (no validation data: 0.5)", official=official,
    )  # fmt: skip

    line = round_line(record, 2)
    assert "no site test split" in line and "n/a" not in line
    assert "official test auc 0.800 bacc 0.700" in line

    out = io.StringIO()
    print_summary(RunSummary(tmp_path, [record]), MedfedConfig(), Console(file=out, width=200))
    printed = out.getvalue()
    assert "Final round 2: the sites hold no test split of their own" in printed
    assert "per site: hospital-a 3.50, hospital-b 3.25" in printed
    assert "official test, final round 2: auc 0.800 bal.acc 0.700" in printed
    assert "n/a" not in printed and "no validation data" not in printed

    page = _parse(render_report("run", {"privacy.delta": 1e-5}, [record.to_json()]))
    overview = page.text["overview"]
    assert "The sites hold no test split of their own" in overview
    assert "pooled test metrics" not in overview and "no validation data" not in overview
    assert re.search(r"final round 2\s*0\.900\s*0\.800\s*0\.700", overview)
    assert "3.5" in overview  # the max ε card stays
    for section in ("roc", "calibration", "confusion", "fairness"):  # no empty plots or zeros
        assert page.text[section].endswith("nothing pooled to show."), section

    # a site that does hold test images keeps the pooled table and line
    held = {**empty, "num_examples": 12}
    record.site_metrics = {"hospital-a": held, "hospital-b": empty}
    assert "no site test split" not in round_line(record, 2)

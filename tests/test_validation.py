"""Update validation: each kind of bad update from one of five sites is caught, honest ones pass."""

from __future__ import annotations

import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from common import keys
from common.config import ValidationConfig
from server.validation import Candidate, validate_round
from tests._fed_helpers import train_content

RNG = np.random.default_rng(0)
GLOBAL = {
    "conv.weight": RNG.normal(size=(4, 1, 3, 3)).astype(np.float32),
    "conv.bias": np.zeros(4, dtype=np.float32),
    "fc.weight": RNG.normal(size=(2, 4)).astype(np.float32),
}
POLICY = ValidationConfig(norm_multiple=10.0, max_examples=100_000, min_cosine=0.0)


def _arrays(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(value) for name, value in values.items()})


def _honest(site: int) -> dict[str, np.ndarray]:
    """Global model + a shared descent direction + a little site-specific noise."""
    rng = np.random.default_rng(100 + site)
    return {
        name: (value - 0.05 * np.sign(value + 0.1) + 0.01 * rng.normal(size=value.shape)).astype(
            np.float32
        )
        for name, value in GLOBAL.items()
    }


def _round(bad: dict[str, np.ndarray] | None = None, **bad_metrics) -> list[Candidate]:
    candidates = []
    for site in range(5):
        values = bad if (site == 2 and bad is not None) else _honest(site)
        extra = bad_metrics if site == 2 else {}
        content = train_content(_arrays(values), site, **extra)
        candidates.append(Candidate(f"hospital-{'abcde'[site]}", content))
    return candidates


def _flip(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: (2 * GLOBAL[n] - v).astype(np.float32) for n, v in values.items()}


def _scale(values: dict[str, np.ndarray], factor: float) -> dict[str, np.ndarray]:
    return {n: (GLOBAL[n] + factor * (v - GLOBAL[n])).astype(np.float32) for n, v in values.items()}


def test_honest_updates_all_pass() -> None:
    verdict = validate_round(_round(), GLOBAL, POLICY)
    assert [c.site for c in verdict.accepted] == [f"hospital-{s}" for s in "abcde"]
    assert verdict.rejected == {}


NAN = {**_honest(2), "fc.weight": np.full((2, 4), np.nan, dtype=np.float32)}
INF = {**_honest(2), "conv.bias": np.array([0, np.inf, 0, 0], dtype=np.float32)}
WRONG_SHAPE = {**_honest(2), "fc.weight": np.zeros((3, 4), dtype=np.float32)}
WRONG_DTYPE = {**_honest(2), "conv.bias": np.zeros(4, dtype=np.float64)}
MISSING = {k: v for k, v in _honest(2).items() if k != "conv.bias"}
EXTRA = {**_honest(2), "backdoor": np.ones(3, dtype=np.float32)}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (NAN, "array 'fc.weight' has non-finite values"),
        (INF, "array 'conv.bias' has non-finite values"),
        (WRONG_SHAPE, r"array 'fc.weight' has shape \(3, 4\), expected \(2, 4\)"),
        (WRONG_DTYPE, "array 'conv.bias' has dtype float64, expected float32"),
        (MISSING, r"has 2 arrays, expected 3 \(missing conv.bias\)"),
        (EXTRA, r"has 4 arrays, expected 3 \(unexpected backdoor\)"),
        (_scale(_honest(2), 1000.0), r"update norm .* exceeds 10 x the round's median"),
        (_flip(_honest(2)), r"update direction disagrees .*cosine -"),
    ],
    ids=["nan", "inf", "shape", "dtype", "missing", "extra", "x1000", "sign-flip"],
)
def test_bad_update_from_one_site_is_rejected_with_its_reason(bad, reason: str) -> None:
    verdict = validate_round(_round(bad), GLOBAL, POLICY)
    assert list(verdict.rejected) == ["hospital-c"]
    assert re.search(reason, verdict.rejected["hospital-c"]), verdict.rejected["hospital-c"]
    assert [c.site for c in verdict.accepted] == [
        "hospital-a",
        "hospital-b",
        "hospital-d",
        "hospital-e",
    ]


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({keys.NUM_EXAMPLES: 0}, "implausible num-examples 0"),
        ({keys.NUM_EXAMPLES: -5}, "implausible num-examples -5"),
        ({keys.NUM_EXAMPLES: 10**9}, "implausible num-examples 1000000000"),
        ({keys.NUM_EXAMPLES: 12.5}, "implausible num-examples 12.5"),
        ({"patient-id": 12345}, "metrics outside the allow-list: patient-id"),
        ({keys.EPSILON: 3.0}, "metric names differ from the other sites"),
    ],
)
def test_implausible_or_unexpected_metrics_are_rejected(metrics, reason: str) -> None:
    verdict = validate_round(_round(None, **metrics), GLOBAL, POLICY)
    assert list(verdict.rejected) == ["hospital-c"]
    assert reason in verdict.rejected["hospital-c"]


def test_sign_flip_passes_when_the_cosine_check_is_off_and_validation_can_be_disabled() -> None:
    flipped = _round(_flip(_honest(2)))
    assert validate_round(flipped, GLOBAL, ValidationConfig()).rejected == {}
    assert validate_round(_round(NAN), GLOBAL, ValidationConfig(enabled=False)).rejected == {}


def test_norm_check_needs_three_updates_to_compare() -> None:
    two = _round(_scale(_honest(2), 1000.0))[1:3]
    assert validate_round(two, GLOBAL, POLICY).rejected == {}

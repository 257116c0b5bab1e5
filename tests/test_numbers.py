"""Printed numbers keep their precision (``common.numbers``)."""

from __future__ import annotations

import math

import pytest

from common.numbers import number, ratio


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-5, "1e-05"),
        (2.5e-7, "2.5e-07"),
        (0.0123, "0.0123"),
        (0.3, "0.300"),
        (8.0, "8.00"),
        (7.994, "7.99"),
        (123.4, "123"),
        (0.0, "0"),
        (-0.05, "-0.0500"),
        (3.2e7, "3.2e+07"),
        (None, "n/a"),
        (math.nan, "n/a"),
    ],
)
def test_number_keeps_three_significant_digits_at_any_magnitude(value, text) -> None:
    assert number(value) == text


def test_delta_never_prints_as_zero() -> None:
    for delta in (1e-5, 1e-6, 1e-9, 5e-4):
        assert float(number(delta)) == pytest.approx(delta)


def test_ratio_has_three_decimals_and_a_missing_marker() -> None:
    assert ratio(0.8973) == "0.897"
    assert ratio(0.0) == "0.000"
    assert ratio(math.nan) == "n/a"
    assert number(1.23456, significant=4) == "1.235"


def test_round_line_shows_the_operating_point_and_a_small_epsilon_exactly() -> None:
    from server.console import round_line
    from server.recorder import RoundRecord

    record = RoundRecord(
        round=3,
        train_sites=["hospital-a"],
        eval_sites=["hospital-a"],
        train_loss=0.5,
        loss=0.63301,
        accuracy=0.919,
        auc=0.8941,
        epsilon_max=0.004,
        epsilon={"hospital-a": 0.004},
        site_auc={},
        site_accuracy={},
        elapsed_s=1.0,
        sensitivity=0.8,
        specificity=0.97590,
        threshold=0.1,
    )

    line = round_line(record, 30)

    assert line.startswith("round 3/30  loss 0.6330  acc 0.919  auc 0.894")
    assert "sens 0.800 spec 0.976 @0.10" in line
    assert "eps(max) 0.00400" in line

"""Test timeouts scale with the measured speed and with MEDFED_TEST_TIMEOUT_SCALE (issue 18)."""

from __future__ import annotations

import pytest

from medfed.testing import timing


def test_timeouts_scale_with_the_slower_of_measurement_and_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing, "measured_factor", lambda: 1.5)
    monkeypatch.delenv(timing.SCALE_ENV, raising=False)
    assert timing.scaled(100) == pytest.approx(150)

    monkeypatch.setenv(timing.SCALE_ENV, "4")
    assert timing.scaled(100) == pytest.approx(400)

    monkeypatch.setenv(timing.SCALE_ENV, "1")
    assert timing.scaled(100) == pytest.approx(150)  # the setting never shortens a wait


@pytest.mark.parametrize("value", ["fast", "0.5", "nan", "-2"])
def test_a_bad_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(timing.SCALE_ENV, value)
    with pytest.raises(ValueError, match=f"{timing.SCALE_ENV} must be a number >= 1"):
        timing.setting()


def test_the_measured_factor_is_at_least_one() -> None:
    assert timing.measured_factor() >= 1.0
    assert timing.measured_factor() == timing.measured_factor()  # measured once, then kept

"""Patient groups of an image, read from its DICOM header at the site (for fairness counts).

Only coarse groups leave this module: ``sex=F|M|O`` from PatientSex, and an age band
(``common.keys.AGE_BANDS``) from PatientAge (``045Y``, ``006M``, ``010W``, ``003D``) or, when
that is absent, from PatientBirthDate and the study date (StudyDate, else SeriesDate or
AcquisitionDate). The tag values themselves never leave the site; a site sends per group
only threshold-grid counts, and only for groups of at least ``eval.min-group-size`` images.
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset

from common import keys

_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
_BAND_LOWER = (0, 18, 40, 60, 80)  # lower bounds of keys.AGE_BANDS


def age_band(years: float) -> str | None:
    """The band of an age in years (``40-59``); None for an impossible age."""
    if not 0 <= years < 150:
        return None
    band = sum(1 for lower in _BAND_LOWER if years >= lower) - 1
    return keys.AGE_BANDS[band]


def _age_string(value: str) -> float | None:
    value = value.strip().upper()
    if len(value) < 2 or value[-1] not in _AGE_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _AGE_UNITS[value[-1]]


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip()[:8]
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
    except ValueError:
        return None


def patient_age(ds: Dataset) -> float | None:
    """Age in years at the study, or None when the header does not say."""
    age = _age_string(str(ds.get("PatientAge", "") or ""))
    if age is not None:
        return age
    born = _date(ds.get("PatientBirthDate"))
    study = next(
        (d for tag in ("StudyDate", "SeriesDate", "AcquisitionDate") if (d := _date(ds.get(tag)))),
        None,
    )
    if born is None or study is None or study < born:
        return None
    return (study - born).days / 365.25


def age_string(value: str) -> float | None:
    """A DICOM age string (``045Y``, ``006M``, ``010W``, ``003D``) in years; None if not one."""
    return _age_string(value)


def patient_sex(ds: Dataset) -> str:
    """``F``, ``M`` or ``O`` from PatientSex; empty when the tag is missing or unusable."""
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return sex if sex in keys.SEX_GROUPS else ""


def patient_groups(ds: Dataset) -> tuple[str, ...]:
    """``("sex=F", "age=40-59")``, or fewer entries when a tag is missing or unusable."""
    groups: list[str] = []
    sex = patient_sex(ds)
    if sex:
        groups.append(f"sex={sex}")
    age = patient_age(ds)
    band = age_band(age) if age is not None else None
    if band is not None:
        groups.append(f"age={band}")
    return tuple(groups)

"""Clinical variables per image: read at the site, encoded at the site, never sent.

A *record* is one image's raw clinical values as text (``{"age": "67.0", "sex": "F",
"smoker": "former"}``; an empty or absent value is missing). ``sample_record`` builds it from
the sample's DICOM header (``age``: PatientAge, else PatientBirthDate and the study date;
``sex``: PatientSex) and its ``labels.csv`` row (every column but path/label/split; a
non-empty ``age`` or ``sex`` column wins over the header).

``ClinicalEncoder`` turns records into the fusion model's tabular input, with the layout of
``common.clinical_columns`` (identical at every site): numeric columns are imputed (median or
mean) and standardised, and each gets an explicit missing indicator (scikit-learn's
``SimpleImputer``, ``StandardScaler`` and ``MissingIndicator(features="all")``); categorical
columns are one-hot over the declared categories plus one missing-or-unknown slot
(``OneHotEncoder`` with fixed categories). It is fitted on the site's own training split
only; the fitted statistics (medians, means, scales) stay in the site's process and are
never sent. ``column_summary`` describes the columns a site has (names, types, counts,
missing shares) for ``medfed site check``: never a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from common.clinical_columns import (
    AGE,
    MISSING_CATEGORY,
    SEX,
    ClinicalColumn,
    ClinicalColumns,
    parse_clinical_columns,
)
from common.data.groups import age_string
from common.data.volumes import Sample

Record = Mapping[str, str]
_SEX_WORDS = {"female": "F", "male": "M", "other": "O"}


def sample_record(sample: Sample) -> dict[str, str]:
    """The raw clinical values of a sample (its first file's header and labels.csv row)."""
    member = sample.members[0]
    record: dict[str, str] = {}
    if member.info.age_years is not None:
        record[AGE] = f"{member.info.age_years:.2f}"
    if member.info.sex:
        record[SEX] = member.info.sex
    for name, value in member.entry.columns:
        if value or name not in record:
            record[name] = value
    return record


def parse_number(value: str | None, column: str) -> float:
    """A numeric value, or NaN when missing or not a number (``age`` also takes ``045Y``)."""
    text = (value or "").strip()
    if not text:
        return math.nan
    try:
        number = float(text)
    except ValueError:
        years = age_string(text) if column == AGE else None
        return math.nan if years is None else years
    return number if math.isfinite(number) else math.nan


def category_of(value: str | None, column: ClinicalColumn) -> str:
    """The declared category a value names (case-insensitive), else the missing slot."""
    text = (value or "").strip()
    if column.name == SEX:
        text = _SEX_WORDS.get(text.casefold(), text)
    for category in column.categories:
        if text.casefold() == category.casefold():
            return category
    return MISSING_CATEGORY


class ClinicalEncoder:
    """Records -> (N, width) float tensor; fit on the training split only (see module doc)."""

    def __init__(self, columns: ClinicalColumns, impute: str = "median") -> None:
        self.columns = columns
        self.numeric: FeatureUnion | None = None
        self.categorical: OneHotEncoder | None = None
        if columns.numeric:
            values = Pipeline(
                [
                    ("impute", SimpleImputer(strategy=impute, keep_empty_features=True)),
                    ("scale", StandardScaler()),
                ]
            )
            self.numeric = FeatureUnion(
                [("value", values), ("missing", MissingIndicator(features="all"))]
            )
        if columns.categorical:
            categories = [[*c.categories, MISSING_CATEGORY] for c in columns.categorical]
            self.categorical = OneHotEncoder(
                categories=categories, handle_unknown="error", sparse_output=False
            )

    def _tables(self, records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray]:
        numeric = np.array(
            [[parse_number(r.get(c.name), c.name) for c in self.columns.numeric] for r in records],
            dtype=np.float64,
        ).reshape(len(records), len(self.columns.numeric))
        categorical = np.array(
            [[category_of(r.get(c.name), c) for c in self.columns.categorical] for r in records],
            dtype=object,
        ).reshape(len(records), len(self.columns.categorical))
        return numeric, categorical

    def fit(self, records: Sequence[Record]) -> ClinicalEncoder:
        """Fit imputation and scaling on ``records`` (the site's training split)."""
        if not records:
            raise ValueError("the clinical encoder needs at least one training record")
        numeric, categorical = self._tables(records)
        if self.numeric is not None:
            self.numeric.fit(numeric)
        if self.categorical is not None:
            self.categorical.fit(categorical)
        return self

    def transform(self, records: Sequence[Record]) -> torch.Tensor:
        """The encoded features (N, ``columns.width``), float32."""
        numeric, categorical = self._tables(records)
        parts = [np.zeros((len(records), 0))]
        if self.numeric is not None and len(records):
            parts.append(self.numeric.transform(numeric).astype(np.float64))
        elif self.numeric is not None:
            parts.append(np.zeros((0, 2 * len(self.columns.numeric))))
        if self.categorical is not None and len(records):
            parts.append(self.categorical.transform(categorical))
        elif self.categorical is not None:
            parts.append(np.zeros((0, sum(c.width for c in self.columns.categorical))))
        return torch.from_numpy(np.hstack(parts).astype(np.float32))


@dataclass(frozen=True)
class EncodedClinical:
    """A site's encoded clinical features per split (rows aligned with its images)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def records_for(records: Sequence[Record], count: int) -> Sequence[Record]:
    """``records``, or ``count`` empty records when the source has none (``.npz`` sites)."""
    if len(records) == count:
        return records
    if not records:
        return [{}] * count
    raise ValueError(f"{len(records)} clinical records for {count} images")


def encode_splits(
    train: Sequence[Record],
    val: Sequence[Record],
    test: Sequence[Record],
    *,
    columns_text: str,
    impute: str = "median",
) -> EncodedClinical:
    """Fit the encoder on ``train`` only and encode all three splits."""
    encoder = ClinicalEncoder(parse_clinical_columns(columns_text), impute).fit(train)
    return EncodedClinical(
        encoder.transform(train), encoder.transform(val), encoder.transform(test)
    )


@dataclass(frozen=True)
class ColumnSummary:
    """One clinical column a site has: its name, inferred type and counts (never values)."""

    name: str
    kind: str  # "numeric" | "categorical"
    present: int
    missing: int
    distinct: int  # distinct non-missing values (categorical), 0 for numeric

    @property
    def missing_share(self) -> float:
        total = self.present + self.missing
        return self.missing / total if total else 1.0

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.kind,
            "images": self.present + self.missing,
            "missing": self.missing,
            "missing_share": round(self.missing_share, 4),
            "distinct_values": self.distinct,
        }


def column_summary(records: Sequence[Record]) -> list[ColumnSummary]:
    """Every column found in ``records``: numeric when all its present values are numbers."""
    names = sorted({name for record in records for name in record})
    summaries = []
    for name in names:
        values = [(record.get(name) or "").strip() for record in records]
        present = [v for v in values if v]
        numeric = all(not math.isnan(parse_number(v, name)) for v in present) and bool(present)
        summaries.append(
            ColumnSummary(
                name=name,
                kind="numeric" if numeric else "categorical",
                present=len(present),
                missing=len(values) - len(present),
                distinct=0 if numeric else len({v.casefold() for v in present}),
            )
        )
    return summaries

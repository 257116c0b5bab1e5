"""The clinical columns a fusion run uses: ``data.clinical-columns``, parsed and checked.

Syntax: comma-separated columns, each ``name`` (numeric) or ``name=cat1|cat2|...``
(categorical, with its declared categories), e.g. ``"age, sex, smoker=never|former|current,
bmi"``. Two names are built in: ``age`` (numeric, years) and ``sex`` (categorical ``F|M|O``)
are read from the DICOM header (PatientAge, else PatientBirthDate and the study date;
PatientSex); a ``labels.csv`` column of the same name, where a site has one, wins over the
header. Every other name is a ``labels.csv`` column.

The categories come from the run config, never from a site's data, so every site encodes
the same feature layout (``feature_names``): per numeric column its standardised value and a
missing indicator, per categorical column one slot per declared category and one for
missing or unknown values. Pure Python (no numpy): the config module imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AGE = "age"
SEX = "sex"
SEX_CATEGORIES = ("F", "M", "O")
MISSING_CATEGORY = "missing-or-unknown"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_RESERVED = {"path", "label", "split"}  # labels.csv's own columns


@dataclass(frozen=True)
class ClinicalColumn:
    """One configured column: numeric (``categories`` empty) or categorical."""

    name: str
    categories: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return not self.categories

    @property
    def width(self) -> int:
        """Encoded features: value + missing indicator, or categories + missing/unknown."""
        return 2 if self.numeric else len(self.categories) + 1


@dataclass(frozen=True)
class ClinicalColumns:
    """The parsed ``data.clinical-columns`` (empty: an image-only run)."""

    columns: tuple[ClinicalColumn, ...] = ()

    @property
    def numeric(self) -> tuple[ClinicalColumn, ...]:
        return tuple(c for c in self.columns if c.numeric)

    @property
    def categorical(self) -> tuple[ClinicalColumn, ...]:
        return tuple(c for c in self.columns if not c.numeric)

    @property
    def width(self) -> int:
        """Length of the encoded feature vector (the fusion model's tabular input)."""
        return sum(column.width for column in self.columns)

    def feature_names(self) -> list[str]:
        """The encoded layout, in order: numeric values, numeric indicators, categories."""
        names = [c.name for c in self.numeric]
        names += [f"{c.name}:missing" for c in self.numeric]
        for column in self.categorical:
            names += [f"{column.name}={v}" for v in (*column.categories, MISSING_CATEGORY)]
        return names


def parse_clinical_columns(text: str) -> ClinicalColumns:
    """Parse ``data.clinical-columns``; ``ValueError`` with a one-phrase reason if invalid."""
    columns: list[ClinicalColumn] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, has_categories, declared = (s.strip() for s in part.partition("="))
        if not _NAME.fullmatch(name):
            raise ValueError(f"'{name}' is not a column name (letters, digits, _ and -)")
        if name.lower() in _RESERVED:
            raise ValueError(f"'{name}' is a labels.csv column of its own, not a clinical one")
        if any(c.name == name for c in columns):
            raise ValueError(f"column '{name}' is named twice")
        categories = tuple(v.strip() for v in declared.split("|") if v.strip())
        if has_categories and not categories:
            raise ValueError(f"column '{name}' declares no categories (name=a|b|...)")
        if len({v.casefold() for v in categories}) != len(categories):
            raise ValueError(f"column '{name}' declares a category twice")
        if name == AGE and categories:
            raise ValueError("'age' is numeric (years); it takes no categories")
        if name == SEX:
            if categories and {v.upper() for v in categories} != set(SEX_CATEGORIES):
                raise ValueError(f"'sex' has the categories {'|'.join(SEX_CATEGORIES)}")
            categories = SEX_CATEGORIES
        columns.append(ClinicalColumn(name, categories))
    return ClinicalColumns(tuple(columns))


def clinical_columns_rule(text: str) -> str | None:
    """Config rule for ``data.clinical-columns`` (None when valid)."""
    try:
        parse_clinical_columns(text)
    except ValueError as problem:
        return str(problem)
    return None

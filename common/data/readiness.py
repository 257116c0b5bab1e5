"""Is a site folder ready to train on? The facts behind ``medfed site check``.

Built from a ``SiteIngest`` (so it reflects exactly what training would use): usable images
per class and split, modalities, photometric interpretations, sizes, transfer syntaxes,
skipped files with reasons, which identifying tags (PHI) the headers carry — counted by
tag name, values never read out — and the clinical variables found (``age``/``sex`` from the
headers, other ``labels.csv`` columns): name, type, missing share and, for categorical ones,
how many distinct values; never a value. A site is ready when it has at least ``min_images`` usable
training images and every class has at least one of them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common.clinical_columns import MISSING_CATEGORY, parse_clinical_columns
from common.data.clinical import category_of, column_summary, parse_number
from common.data.ingest import SiteIngest
from common.data.manifest import SPLITS, shown
from common.data.phi import DATE_TAGS, INSTITUTION_TAGS, NAME_AND_ID_TAGS

PHI_NOTE = (
    "Only derived, preprocessed pixel tensors are used for training; they, the files and "
    "these tags never leave the site (only model weights and allow-listed metrics do)."
)


@dataclass
class SiteReport:
    """Readiness of one site folder (JSON-ready through ``to_json``)."""

    site_id: str
    path: str
    layout: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    modalities: dict[str, int]
    photometric: dict[str, int]
    sizes: dict[str, int]
    transfer_syntaxes: dict[str, int]
    frames: dict[str, int]
    skipped: list[dict[str, str]]
    phi_tags: dict[str, int]
    burned_in_yes: int
    files_used: int
    clinical: list[dict[str, object]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ready": self.ready, "phi_note": PHI_NOTE}


def build_report(
    ingest: SiteIngest, classes: tuple[str, ...], min_images: int, clinical_columns: str = ""
) -> SiteReport:
    """Summarise an ingest result and decide readiness (``clinical_columns``: the run's
    ``data.clinical-columns``, whose columns are checked against what the site has)."""
    counts = {
        name: {split: ingest.labels[split].count(index) for split in SPLITS}
        for index, name in enumerate(classes)
    }
    members = [member for sample in ingest.samples for member in sample.members]
    infos = [member.info for member in members]
    phi = Counter(tag for info in infos for tag in info.phi_tags)
    report = SiteReport(
        site_id=ingest.site_id,
        path=shown(ingest.root),
        layout=ingest.layout,
        classes=list(classes),
        counts=counts,
        modalities=_counts(info.modality for info in infos),
        photometric=_counts(info.photometric for info in infos),
        sizes=_counts(info.size for info in infos),
        transfer_syntaxes=_counts(info.transfer_syntax_name for info in infos),
        frames=_counts(_kind(sample) for sample in ingest.samples),
        skipped=[{"path": shown(s.path, ingest.root), "reason": s.reason} for s in ingest.skipped],
        phi_tags={
            tag: phi[tag] for tag in (*NAME_AND_ID_TAGS, *DATE_TAGS, *INSTITUTION_TAGS) if phi[tag]
        },
        burned_in_yes=sum(info.burned_in == "YES" for info in infos),
        files_used=len(members),
    )
    records = [record for split in SPLITS for record in ingest.clinical[split]]
    report.clinical = [summary.to_json() for summary in column_summary(records)]
    report.warnings.extend(_clinical_warnings(records, clinical_columns))
    train_total = len(ingest.labels["train"])
    if train_total < min_images:
        report.problems.append(
            f"only {train_total} usable training images (at least {min_images} needed)"
        )
    missing = [name for name in classes if counts[name]["train"] == 0]
    if missing:
        report.problems.append(f"no training images for class {', '.join(missing)}")
    report.warnings.extend(ingest.warnings)
    if not ingest.labels["test"]:
        report.warnings.append("no held-out (test) images: this site cannot report evaluation")
    if report.skipped:
        report.warnings.append(f"{len(report.skipped)} files or entries skipped (listed above)")
    if phi:
        report.warnings.append("identifying tags present in DICOM headers (see PHI)")
    if report.burned_in_yes:
        report.warnings.append(
            f"{report.burned_in_yes} files flag burned-in annotations: text may be in the pixels"
        )
    return report


def _clinical_warnings(records: list[dict[str, str]], text: str) -> list[str]:
    """The configured clinical columns this site lacks or fills with undeclared categories
    (counts only: an undeclared value is encoded as missing-or-unknown)."""
    warnings = []
    for column in parse_clinical_columns(text).columns:
        values = [record.get(column.name, "") for record in records]
        if not any(values):
            warnings.append(f"clinical column '{column.name}' has no values at this site")
            continue
        if column.numeric:
            bad = sum(1 for v in values if v and math.isnan(parse_number(v, column.name)))
            what = "values that are not numbers"
        else:
            bad = sum(1 for v in values if v and category_of(v, column) == MISSING_CATEGORY)
            what = "values outside the declared categories"
        if bad:
            warnings.append(f"clinical column '{column.name}': {bad} {what} (encoded as missing)")
    return warnings


def _counts(values: Any) -> dict[str, int]:
    return dict(Counter(values).most_common())


def _kind(sample: Any) -> str:
    if len(sample.members) > 1:
        return "series (several files)"
    return "multi-frame" if sample.info.frames > 1 else "single image"

"""Which identifying (PHI) attributes a DICOM header carries: by name only, never the values.

``medfed site check`` reports these so hospital IT sees what the export contains. Training uses
only derived pixel tensors, which never leave the site; tags are not read into the model nor
sent anywhere. Pixel data may still carry burned-in text (Burned In Annotation = YES).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import ConstrainedList

NAME_AND_ID_TAGS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDsSequence",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
)
DATE_TAGS = (
    "PatientBirthDate",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
)
INSTITUTION_TAGS = (
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
)
PHI_TAGS = NAME_AND_ID_TAGS + DATE_TAGS + INSTITUTION_TAGS


def identifying_tags(ds: Dataset) -> tuple[str, ...]:
    """Keywords of the identifying attributes present with a non-empty value."""
    return tuple(keyword for keyword in PHI_TAGS if _non_empty(ds.get(keyword)))


def burned_in_annotation(ds: Dataset) -> str:
    """The Burned In Annotation flag: ``"YES"``, ``"NO"`` or ``""`` when absent."""
    value = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    return value if value in {"YES", "NO"} else ""


def _non_empty(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, ConstrainedList):  # sequences and multi-valued elements
        return len(value) > 0
    return bool(str(value).strip())

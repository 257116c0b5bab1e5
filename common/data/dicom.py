"""Decode one DICOM file into images in [0, 1] (pydicom + pylibjpeg do the parsing and decoding).

Pixel semantics, in order, for each frame:
stored values -> Modality LUT (Modality LUT Sequence or RescaleSlope/Intercept) -> VOI LUT
Sequence or WindowCenter/Width when present (first view), else robust percentile windowing
(0.5th-99.5th) -> [0, 1] -> MONOCHROME1 inverted so that bright means dense everywhere.
Enhanced multi-frame objects keep these attributes in their functional groups: the shared
and per-frame groups are merged into a flat per-frame view first. YBR_* colour data comes
back from pydicom's decoder as RGB (converted here if a plugin left it in YBR), PALETTE COLOR
goes through its colour LUT; colour images are scaled by their bit depth.

Which frames of a multi-frame object become samples is decided by the caller
(``common.data.volumes``); :func:`frame_order` gives their spatial (or temporal) order.
Problems are raised as ``DicomReadError`` whose ``str()`` is a short, PHI-free reason.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
    get_decoder,
)
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from common.data.groups import patient_age, patient_groups, patient_sex
from common.data.phi import burned_in_annotation, identifying_tags

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
PERCENTILE_SAMPLE = 65_536  # pixels looked at for percentile windowing (strided subsample)
DEFER_SIZE = "64 KB"  # bulk values (pixel data) are read from disk only when decoded
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")
_VIEW_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_DECODING_DS = frozenset(
    (
        "RescaleSlope",
        "RescaleIntercept",
        "WindowCenter",
        "WindowWidth",
        "ImagePositionPatient",
        "ImageOrientationPatient",
    )
)
PIXEL_DATA = BaseTag(0x7FE00010)
_ENDS_EARLY = "End of file reached before delimiter"  # pydicom's warning
_DS_BYTES = re.compile(rb"[0-9+\-.eE \\\x00]*")
_UID_TEXT = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FUNCTIONAL_SEQUENCES = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records (they can quote tag values, i.e. PHI)."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class DicomReadError(Exception):
    """A file that cannot become a training image; ``str()`` is a short reason (no PHI)."""


@dataclass(frozen=True)
class DicomInfo:
    """What one file's header says, as plain values (identifying tags by name only)."""

    sop_class: str
    modality: str
    photometric: str
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    transfer_syntax: str
    series_uid: str
    slice_position: float | None
    instance_number: int | None
    phi_tags: tuple[str, ...]
    burned_in: str
    sop_instance_uid: str = ""
    # coarse patient groups (``common.data.groups``): stay at the site, for fairness counts
    groups: tuple[str, ...] = ()
    # clinical variables for fusion models (``common.data.clinical``): stay at the site,
    # never reported (a report counts them, it never shows them)
    age_years: float | None = None
    sex: str = ""

    @property
    def size(self) -> str:
        return f"{self.rows}x{self.columns}"

    @property
    def transfer_syntax_name(self) -> str:
        return UID(self.transfer_syntax).name

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "phi_tags": list(self.phi_tags), "groups": list(self.groups)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DicomInfo:
        groups = tuple(data.get("groups", ()))  # absent from entries cached before groups
        return cls(**{**data, "phi_tags": tuple(data["phi_tags"]), "groups": groups})


def open_dicom(path: Path) -> Dataset:
    """Parse a file's header; pixel data stays on disk until decoded."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
        if any(_ENDS_EARLY in str(warning.message) for warning in caught):
            # compressed pixel data cut short: pydicom finds no end of its fragments and
            # returns an empty dataset; say what it is, not "no pixel data"
            raise DicomReadError(
                "corrupt or truncated pixel data (file ends inside its compressed frames)"
            )
    except InvalidDicomError:
        ds = _open_without_preamble(path)
    except DicomReadError:
        raise
    except OSError as exc:  # the file itself (permissions, vanished, I/O error)
        raise DicomReadError(f"cannot read file ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # pydicom raises many types for damaged headers
        raise DicomReadError(f"corrupt or truncated DICOM header ({type(exc).__name__})") from None
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian
        )
    repair_decimals(ds)
    return ds


def repair_decimals(ds: Dataset) -> None:
    """Read locale decimals (``1,5``) in DS values as numbers, here and in sequences.

    Some exports write decimal strings with a comma; pydicom keeps them as text. A value
    that is a number once the comma is a point is rewritten; any other invalid DS value is
    dropped, or, in an attribute decoding depends on, makes the file unusable (the reason
    names the attribute, never its value). Raw values of valid DS characters are not parsed.
    """
    for tag in list(ds.keys()):
        # raw, and a deferred value (the pixel data) stays on disk: nothing is read to look
        element = ds.get_item(tag, keep_deferred=True)
        vr = element.VR or _dictionary_vr(tag)
        if vr == "SQ":
            for item in ds[tag].value or []:
                repair_decimals(item)
            continue
        value = element.value
        if vr != "DS" or value is None:
            continue
        if isinstance(value, bytes) and _DS_BYTES.fullmatch(value):
            continue  # raw and made of valid DS characters: leave it unparsed
        _repair_ds(ds, tag)


def _repair_ds(ds: Dataset, tag: BaseTag) -> None:
    element = ds[tag]
    values = list(element.value) if isinstance(element.value, MultiValue) else [element.value]
    if not any(isinstance(v, str) and not isinstance(v, float) for v in values):
        return
    fixed = [str(v).strip().replace(",", ".") for v in values]
    if all(not text or _NUMBER.fullmatch(text) for text in fixed):
        element.value = fixed if len(fixed) > 1 else fixed[0]
    elif element.keyword in _DECODING_DS:
        raise DicomReadError(f"invalid decimal number in {element.keyword}")
    else:
        del ds[tag]


def _dictionary_vr(tag: BaseTag) -> str | None:
    entry = DicomDictionary.get(int(tag))  # the common case, without building a Tag
    if entry is not None:
        return str(entry[0])
    try:
        return dictionary_VR(tag)  # repeating groups (50xx, 60xx)
    except KeyError:
        return None


def _open_without_preamble(path: Path) -> Dataset:
    """Old exports lack the 128-byte preamble; accept them if they name a SOP class (so a
    structure set is reported as what it is, not as "not a DICOM file")."""
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE, force=True)
        sop_class = str(ds.get("SOPClassUID", ""))
        looks_dicom = bool(_UID_TEXT.fullmatch(sop_class)) or "PixelData" in ds
    except Exception:
        looks_dicom = False
    if not looks_dicom:
        raise DicomReadError("not a DICOM file")
    return ds


def describe(ds: Dataset) -> DicomInfo:
    """Check that ``ds`` holds a decodable image and summarise its header."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if "PixelData" not in ds:
        if "Rows" in ds and "Columns" in ds:  # an image header whose pixel data is missing
            raise DicomReadError("corrupt or truncated pixel data (file ends before it)")
        kind = UID(sop_class).name if sop_class else "unknown object"
        raise DicomReadError(f"no pixel data ({kind})")
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomReadError(f"unsupported transfer syntax {syntax.name} ({syntax})") from None
    if not decoder.is_available:
        raise DicomReadError(f"no installed decoder for transfer syntax {syntax.name}")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = _int(ds.get("NumberOfFrames"), default=1)
    if rows == 0 or columns == 0 or frames == 0:
        raise DicomReadError(f"zero-size image ({rows}x{columns}, {frames} frames)")
    samples = _int(ds.get("SamplesPerPixel"), default=1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    _check_channels(samples, photometric)
    if not syntax.is_encapsulated:
        _check_complete(ds, rows * columns * frames * samples)
    return DicomInfo(
        sop_class=sop_class,
        modality=str(ds.get("Modality", "") or "unknown"),
        photometric=photometric,
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=samples,
        transfer_syntax=str(syntax),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        slice_position=_slice_position(ds),
        instance_number=_int(ds.get("InstanceNumber"), default=None),
        phi_tags=identifying_tags(ds),
        burned_in=burned_in_annotation(ds),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        groups=patient_groups(ds),
        age_years=patient_age(ds),
        sex=patient_sex(ds),
    )


def _check_complete(ds: Dataset, pixels: int) -> None:
    """Raise if native pixel data is shorter than the header says (a file cut short).

    Looked at from the header alone (a deferred value is measured against the file size),
    so a truncated file is dropped before series are formed and duplicates resolved:
    it costs only itself, never an intact copy or the rest of its series.
    """
    bits = _int(ds.get("BitsAllocated"), default=None)
    if bits is None:
        return
    expected = (pixels * bits + 7) // 8
    element = ds.get_item(PIXEL_DATA)
    value = element.value
    if isinstance(value, bytes | bytearray):
        available = len(value)
    elif value is None and isinstance(element, RawDataElement) and ds.filename:
        try:
            size = os.path.getsize(ds.filename)
        except (OSError, TypeError):
            return
        available = min(element.length, size - element.value_tell)
    else:
        return
    if available < expected:
        raise DicomReadError(
            f"corrupt or truncated pixel data ({available} of {expected} bytes: file cut short)"
        )


def _check_channels(samples: int, photometric: str) -> None:
    if samples == 1 and photometric in (*MONOCHROME, "PALETTE COLOR"):
        return
    if samples == 3 and photometric in COLOUR:
        return
    raise DicomReadError(
        f"inconsistent channel count: SamplesPerPixel {samples} with "
        f"PhotometricInterpretation '{photometric or 'missing'}'"
    )


def _int(value: Any, default: int | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _slice_position(ds: Dataset) -> float | None:
    """Position along the slice normal (mm) of a single-frame cross-sectional image."""
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    if position is None or orientation is None or len(orientation) != 6 or len(position) != 3:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return float(np.dot(normal, np.asarray(position, float)))


def frame_order(ds: Dataset, frames: int) -> list[int]:
    """Frame indices in spatial order for enhanced multi-frame objects, else stored order."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return list(range(frames))
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    keys: list[float] = []
    for group in per_frame:
        plane = _item(group, "PlanePositionSequence")
        orient = _item(group, "PlaneOrientationSequence") or _item(
            shared, "PlaneOrientationSequence"
        )
        content = _item(group, "FrameContentSequence")
        if plane is not None and orient is not None and "ImageOrientationPatient" in orient:
            iop = np.asarray(orient.ImageOrientationPatient, float)
            keys.append(float(np.dot(np.cross(iop[:3], iop[3:]), plane.ImagePositionPatient)))
        elif content is not None and "InStackPositionNumber" in content:
            keys.append(float(content.InStackPositionNumber))
        else:
            return list(range(frames))
    return sorted(range(frames), key=lambda i: (keys[i], i))


def _item(group: Dataset, keyword: str) -> Dataset | None:
    sequence = group.get(keyword)
    return sequence[0] if sequence else None


def decode_frame(ds: Dataset, info: DicomInfo, index: int) -> np.ndarray:
    """One frame as float32 in [0, 1]: (H, W) for grayscale, (H, W, 3) for colour."""
    try:
        pixels, meta = get_decoder(info.transfer_syntax).as_array(ds, index=index, as_rgb=True)
    except Exception as exc:  # decoders raise many types for damaged data
        raise DicomReadError(f"corrupt or truncated pixel data ({type(exc).__name__})") from None
    photometric = str(meta.get("photometric_interpretation", info.photometric))
    expected = (info.rows, info.columns) + ((3,) if info.samples_per_pixel == 3 else ())
    if pixels.shape != expected:
        raise DicomReadError(
            f"decoded shape {pixels.shape} does not match header {expected} "
            "(inconsistent channel count or size)"
        )
    if photometric == "PALETTE COLOR":
        colour = apply_color_lut(pixels, ds)[..., :3]
        return (colour / float(np.iinfo(colour.dtype).max)).astype(np.float32)
    if info.samples_per_pixel == 3:
        if photometric.startswith("YBR"):
            pixels = convert_color_space(pixels, photometric, "RGB")
        peak = 2 ** int(ds.get("BitsStored") or pixels.dtype.itemsize * 8) - 1
        return np.clip(pixels / float(peak), 0.0, 1.0).astype(np.float32)
    return _grayscale_to_unit(pixels, _frame_view(ds, index))


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """Top-level attributes overlaid with the shared and this frame's functional groups."""
    view = Dataset()
    view.file_meta = ds.file_meta
    for keyword in _VIEW_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    groups = [(ds.get("SharedFunctionalGroupsSequence") or [None])[0]]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for keyword in _FUNCTIONAL_SEQUENCES:
            item = _item(group, keyword) if group is not None else None
            for element in item or []:
                view[element.tag] = element
    return view


def _grayscale_to_unit(pixels: np.ndarray, view: Dataset) -> np.ndarray:
    window = _affine_window(view)
    if window is not None:
        scaled = _apply_affine_window(pixels, *window)
    else:
        values = apply_modality_lut(pixels, view)
        found = _voi_window(values, view)
        if found is None:
            low, high = _percentile_window(values)
        else:
            values, low, high = found
        # in place, in float32: this is the hot loop of a first ingest
        scaled = values.astype(np.float32)  # always a copy: ``pixels`` may be a read-only view
        scaled -= np.float32(low)
        scaled *= np.float32(1.0 / max(high - low, 1e-6))
        np.clip(scaled, 0.0, 1.0, out=scaled)
    if view.get("PhotometricInterpretation") == "MONOCHROME1":
        np.subtract(np.float32(1.0), scaled, out=scaled)
    return scaled


def _affine_window(view: Dataset) -> tuple[float, float, bool] | None:
    """Rescale + window folded into one ``stored * scale + offset`` (then clip or sigmoid).

    The common case of CT, MR and most CR/DX: RescaleSlope/Intercept and a LINEAR,
    LINEAR_EXACT or SIGMOID window (PS3.3 C.11.2.1.2). Composed with this module's mapping
    of the window's output range onto [0, 1], pydicom's ``apply_modality_lut`` followed by
    ``apply_windowing`` reduces to ``clip(stored * scale + offset, 0, 1)`` (linear) or
    ``1 / (1 + exp(-(stored * scale + offset)))`` (sigmoid): one float32 pass instead of
    several float64 passes and masks (the tests compare both paths on real files). Returns
    None, leaving the file to pydicom, for a Modality or VOI LUT Sequence, a window width
    the fast path does not cover, a non-positive slope or any malformed value.
    """
    if view.get("ModalityLUTSequence") or view.get("VOILUTSequence"):
        return None
    if "WindowCenter" not in view or "WindowWidth" not in view:
        return None
    try:
        center = float(_first(view.WindowCenter))
        width = float(_first(view.WindowWidth))
        slope, intercept = 1.0, 0.0
        if "RescaleSlope" in view and "RescaleIntercept" in view:
            slope, intercept = float(view.RescaleSlope), float(view.RescaleIntercept)
        function = str(view.get("VOILUTFunction") or "LINEAR").strip().upper()
    except (TypeError, ValueError, IndexError):
        return None
    if not (slope > 0 and math.isfinite(slope) and math.isfinite(intercept)):
        return None
    if function == "LINEAR" and width > 1:
        center, width = center - 0.5, width - 1
    elif function not in ("LINEAR_EXACT", "SIGMOID") or not width > 0:
        return None
    if not (math.isfinite(center) and math.isfinite(width)):
        return None
    if function == "SIGMOID":  # y = 1 / (1 + exp(-4 (x - c) / w))
        return 4 * slope / width, 4 * (intercept - center) / width, True
    return slope / width, (intercept - center) / width + 0.5, False  # clip((x - c) / w + 0.5)


def _apply_affine_window(
    pixels: np.ndarray, scale: float, offset: float, sigmoid: bool
) -> np.ndarray:
    scaled = pixels.astype(np.float32)  # always a copy: ``pixels`` may be a read-only view
    scaled *= np.float32(scale)
    scaled += np.float32(offset)
    if sigmoid:
        np.negative(scaled, out=scaled)
        np.exp(scaled, out=scaled)
        scaled += np.float32(1.0)
        np.reciprocal(scaled, out=scaled)
    else:
        np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled


def _voi_window(values: np.ndarray, view: Dataset) -> tuple[np.ndarray, float, float] | None:
    """Apply the file's VOI LUT or window; return the values and its output range."""
    has_lut = bool(view.get("VOILUTSequence"))
    has_window = "WindowCenter" in view and "WindowWidth" in view
    if not (has_lut or has_window):
        return None
    try:
        if has_lut:
            descriptor = view.VOILUTSequence[0].LUTDescriptor
            first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
            probe = np.arange(first, first + entries)
        else:
            if float(_first(view.WindowWidth)) <= 0:
                return None
            probe = np.array([-1e12, 1e12])
        low, high = (float(v) for v in _range(apply_voi_lut(probe, view)))
        if high <= low:
            return None
        return apply_voi_lut(values, view), low, high
    except (ValueError, TypeError, AttributeError, IndexError, NotImplementedError):
        return None  # malformed VOI attributes: fall back to percentile windowing


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, MultiValue | list | tuple) else value


def _range(values: np.ndarray) -> tuple[float, float]:
    return float(np.min(values)), float(np.max(values))


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    flat = values.reshape(-1)
    step = max(1, flat.size // PERCENTILE_SAMPLE)
    low, high = np.percentile(flat[::step].astype(np.float32), [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:  # (nearly) constant image: use its full range
        low, high = float(flat.min()), float(flat.max())
    return float(low), float(high)

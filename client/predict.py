"""Score new DICOM images with a saved model, at the site (``medfed predict``).

This runs where the images are (a hospital, next to its PACS export), so it lives on the
site side and reads images exactly as a site's training and evaluation do: files are listed
by ``manifest.walk_folder``, opened and checked by ``ingest.read_header`` (with the sites'
skip reasons), grouped into samples (series, multi-frame objects) by
``volumes.group_samples`` and decoded into model tensors by ``ingest.decode_sample`` with
the saved ``data.*`` settings
(``model_file.SavedModel.data``); probabilities come from ``evaluate.predict_scores``. So a
new study meets the same windowing, resize, channels and normalisation the model was
trained with.

One output row per input file (per frame with ``data.frames = all``): the files of a series
that is scored as one sample share its prediction (``series_files`` > 1). Files that cannot
be scored get a row with the reason, never an exception. Rows carry the file's path relative
to the input, its UIDs, the predicted class and the class probabilities: no other tag value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from pydicom.dataset import Dataset
from rich.console import Console

from client.evaluate import predict_scores
from common.data.dicom import (
    COLOUR,
    DicomInfo,
    frame_order,
    quiet_pydicom,
)
from common.data.ingest import decode_sample, geometry, read_header
from common.data.manifest import LabelledFile, shown, walk_folder
from common.data.volumes import Member, Sample, group_samples
from common.errors import ConfigError
from common.model_file import SavedModel
from common.progress import file_progress

DEFAULT_THRESHOLD = 0.5
BATCH = 64  # images scored at once (decoded images wait at most this many)


@dataclass(frozen=True)
class PredictionRow:
    """One output line: a file (or one frame of it) and what the model says about it."""

    file: str
    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    frame: int | None = None  # the stored frame scored, for multi-frame objects
    series_files: int = 1  # files scored together as one series sample
    predicted: str = ""
    probabilities: tuple[float, ...] = ()
    error: str = ""  # why the file was not scored (empty when it was)
    explanation: str = ""  # the Grad-CAM overlay PNG, with --explain
    side_file: bool = False  # not an image at all (notes, CSVs): listed, not counted unreadable


@dataclass
class Predictions:
    """Everything ``predict`` found: rows, warnings, and the rule that made the classes."""

    class_names: tuple[str, ...]
    threshold: float | None  # applied to the positive-class probability; None: arg-max
    rows: list[PredictionRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return sum(1 for row in self.rows if not row.error)

    @property
    def unreadable(self) -> int:
        return sum(1 for row in self.rows if row.error and not row.side_file)

    @property
    def side_files(self) -> int:
        return sum(1 for row in self.rows if row.side_file)


@dataclass(frozen=True)
class _Pending:
    """A decoded model input waiting to be scored, and the rows it answers for."""

    image: torch.Tensor
    rows: tuple[PredictionRow, ...]


def predict(
    saved: SavedModel,
    target: Path,
    *,
    threshold: float | None = None,
    console: Console | None = None,
    explain_dir: Path | None = None,
) -> Predictions:
    """Score a DICOM file or every file under a folder with ``saved``.

    ``threshold`` overrides the saved operating threshold (binary models only).
    ``console`` draws a progress bar; ``explain_dir`` receives one Grad-CAM PNG per image.
    """
    target = Path(target).expanduser()
    if not target.exists():
        raise ConfigError(f"{target}: no such file or folder to score")
    if saved.data.frames == "stack":
        raise ConfigError(
            f"{saved.path}: {saved.model} is a sequence model (data.frames=stack): "
            "medfed predict scores 2D models only (frames=middle or all)"
        )
    names = saved.class_names
    result = Predictions(names, _threshold(saved, threshold, len(names)))
    if saved.defaulted:
        result.warnings.append(
            "model.pt records no preprocessing settings (written by an older medfed): "
            f"using the defaults (frames={saved.data.frames}, resize={saved.data.resize}, "
            f"classes {', '.join(names)})"
        )
    if threshold is not None and len(names) > 2:
        result.warnings.append("--threshold ignored: a multi-class model predicts the arg-max")
    root = target if target.is_dir() else target.parent
    files, side = walk_folder(target) if target.is_dir() else ([target], [])
    result.rows.extend(
        PredictionRow(shown(p.path, root), error=p.reason, side_file=not p.fatal) for p in side
    )
    model = saved.build()
    with quiet_pydicom(), file_progress(console, "predict", len(files)) as advance:
        opened, members = _read_headers(files, root, result.rows, advance)
        result.warnings.extend(_mismatches(saved, [m.info for m in members]))
        batch: list[_Pending] = []
        done = 0  # images scored so far (numbers the overlay PNGs)
        for item in _decode(saved, members, opened, root, result.rows, advance):
            batch.append(item)
            if len(batch) == BATCH:  # scored as decoded: memory stays bounded
                result.rows.extend(_score(model, batch, done, result, explain_dir))
                done, batch = done + len(batch), []
        result.rows.extend(_score(model, batch, done, result, explain_dir))
    result.rows.sort(key=lambda row: (row.file, row.frame or 0))
    return result


def _threshold(saved: SavedModel, override: float | None, classes: int) -> float | None:
    if classes > 2:
        return None
    chosen = override if override is not None else saved.threshold
    return DEFAULT_THRESHOLD if chosen is None else float(chosen)


def _read_headers(
    files: list[Path], root: Path, rows: list[PredictionRow], advance: Callable[[], None]
) -> tuple[dict[str, Dataset], list[Member]]:
    opened: dict[str, Dataset] = {}
    members: list[Member] = []
    for path in files:
        key = str(path)
        info = read_header(path, key, opened)  # the sites' own reading and reasons
        if isinstance(info, str):
            rows.append(PredictionRow(shown(path, root), error=info))
            advance()
            continue
        members.append(Member(LabelledFile(path, 0, "test"), key, info))
    return opened, members


def _decode(
    saved: SavedModel,
    members: list[Member],
    opened: dict[str, Dataset],
    root: Path,
    rows: list[PredictionRow],
    advance: Callable[[], None],
) -> Iterator[_Pending]:
    """Decoded images in sample order; rows with reasons for the samples that fail."""
    shape = geometry(saved.data)
    samples, problems = group_samples(members, root, 0.0, shape.frames)
    for problem in problems:
        rows.append(PredictionRow(shown(problem.path, root), error=problem.reason))
        advance()
    for sample in samples:
        templates = [_row(member, root, len(sample.members)) for member in sample.members]
        images = decode_sample(sample, shape, opened)  # the sites' own decoding and reasons
        datasets = [opened.pop(m.digest, None) for m in sample.members]
        if isinstance(images, str):
            rows.extend(replace(row, error=images) for row in templates)
        else:
            yield from _pair(sample, datasets, images, templates)  # type: ignore[arg-type]
        for _member in sample.members:
            advance()


def _row(member: Member, root: Path, series_files: int) -> PredictionRow:
    info = member.info
    return PredictionRow(
        file=shown(member.entry.path, root),
        sop_instance_uid=info.sop_instance_uid,
        series_instance_uid=info.series_uid,
        series_files=series_files,
    )


def _pair(
    sample: Sample,
    datasets: list[Dataset],
    images: list[torch.Tensor],
    templates: list[PredictionRow],
) -> list[_Pending]:
    """Which rows each decoded image answers for (see ``volumes.sample_tensors``)."""
    if len(sample.members) > 1:  # a series: one image (middle) or one per slice (all)
        if len(images) == 1:
            return [_Pending(images[0], tuple(templates))]
        return [_Pending(image, (row,)) for image, row in zip(images, templates, strict=True)]
    info = sample.members[0].info
    if info.frames == 1:
        return [_Pending(images[0], (templates[0],))]
    order = frame_order(datasets[0], info.frames)
    if len(images) == 1:  # the middle frame of a multi-frame object
        return [_Pending(images[0], (replace(templates[0], frame=order[len(order) // 2]),))]
    return [
        _Pending(image, (replace(templates[0], frame=index),))
        for image, index in zip(images, order, strict=True)
    ]


def _score(
    model: torch.nn.Module,
    batch: list[_Pending],
    first: int,
    result: Predictions,
    explain_dir: Path | None,
) -> list[PredictionRow]:
    """Rows with the class probabilities and decision for one batch (image ``first`` on)."""
    if not batch:
        return []
    images = torch.stack([item.image for item in batch])
    scores, _ = predict_scores(model, images)
    classes = [_decide(p, result.threshold) for p in scores.tolist()]
    heat = None
    if explain_dir is not None:
        from common.gradcam import grad_cam

        heat = grad_cam(model, images, torch.tensor(classes))
    rows: list[PredictionRow] = []
    for offset, (item, probabilities, label) in enumerate(
        zip(batch, scores.tolist(), classes, strict=True)
    ):
        picture = ""
        if heat is not None and explain_dir is not None:
            picture = _explain(
                item, heat[offset], first + offset, explain_dir, result, label, probabilities
            )
        name = result.class_names[label]
        probs = tuple(float(p) for p in probabilities)
        rows.extend(
            replace(row, predicted=name, probabilities=probs, explanation=picture)
            for row in item.rows
        )
    return rows


def _decide(probabilities: list[float], threshold: float | None) -> int:
    """Binary: positive when p(class 1) >= threshold; multi-class: the arg-max."""
    if threshold is not None and len(probabilities) == 2:
        return int(probabilities[1] >= threshold)
    return max(range(len(probabilities)), key=probabilities.__getitem__)


def _explain(
    item: _Pending,
    heat: object,
    index: int,
    directory: Path,
    result: Predictions,
    label: int,
    probabilities: list[float],
) -> str:
    """Write one overlay PNG (named by position and SOPInstanceUID: no file names)."""
    from common.gradcam import write_overlay

    first = item.rows[0]
    uid = first.sop_instance_uid or "no-uid"
    frame = f"-f{first.frame}" if first.frame is not None else ""
    path = directory / f"{index:05d}-{uid}{frame}.png"
    title = f"{result.class_names[label]} (p={probabilities[label]:.2f})"
    write_overlay(item.image, heat, path, title)  # type: ignore[arg-type]
    return str(path)


def _mismatches(saved: SavedModel, infos: list[DicomInfo]) -> list[str]:
    """One warning line per kind of difference between the inputs and the training images."""
    warnings: list[str] = []
    facts = saved.facts
    checks = (
        ("modality", "modalities", [i.modality for i in infos]),
        ("photometric interpretation", "photometric", [i.photometric for i in infos]),
        ("size", "sizes", [i.size for i in infos]),
    )
    unknown = []
    for what, key, values in checks:
        if key not in facts:
            unknown.append(what)
            continue
        odd = Counter(v for v in values if v not in facts[key])
        if odd:
            warnings.append(
                f"{sum(odd.values())} input(s) with a {what} the model was not trained on "
                f"({_counts(odd)}; trained on {', '.join(facts[key])})"
            )
    if unknown:
        found = _counts(Counter(i.modality for i in infos)) or "none readable"
        warnings.append(
            f"training {', '.join(unknown)} unknown (model.pt does not record them): "
            f"not checked (input modalities: {found})"
        )
    size = saved.data.image_size
    small = sum(1 for i in infos if min(i.rows, i.columns) < size)
    if small:
        warnings.append(f"{small} input(s) smaller than the model input ({size}x{size}): upscaled")
    colour = Counter(i.photometric for i in infos if i.photometric in COLOUR)
    if colour and saved.data.channels == 1:
        warnings.append(
            f"{sum(colour.values())} colour input(s) ({_counts(colour)}) for a grayscale "
            "model: converted to grayscale"
        )
    return warnings


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{value} x{count}" for value, count in sorted(counter.items()))

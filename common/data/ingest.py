"""Read a DICOM site folder once: manifest -> content hashes -> headers -> samples -> tensors.

Every step consults the site's ``TensorCache`` first, so a folder that did not change is
loaded without parsing any DICOM. Unusable inputs (see ``SkippedFile`` reasons) are recorded
and skipped, or stop the load with a one-line ``SiteDataError`` when ``strict`` is set.
Decoding shows a rich progress bar on the given console (nothing is drawn for cached data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydicom.dataset import Dataset
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from common.config import DataConfig, parse_class_names
from common.data.cache import TensorCache, config_key, site_cache_dir
from common.data.dicom import DicomInfo, DicomReadError, describe, open_dicom, quiet_pydicom
from common.data.manifest import SPLITS, LabelledFile, SkippedFile, read_manifest, shown
from common.data.volumes import Geometry, Member, Sample, group_samples, sample_tensors
from common.data.workers import DecodeWorkers, worker_count
from common.errors import SiteDataError


@dataclass
class SiteIngest:
    """The outcome of reading one site folder: tensors per split, samples and problems."""

    site_id: str
    root: Path
    layout: str
    images: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    labels: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    # per image: its patient groups (``common.data.groups``), never sent as such
    groups: dict[str, list[tuple[str, ...]]] = field(
        default_factory=lambda: {s: [] for s in SPLITS}
    )
    samples: list[Sample] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    decoded: int = 0
    from_cache: int = 0


def class_names(config: DataConfig) -> tuple[str, ...]:
    """The site's class names, in label-index order (checked by ``DataConfig``)."""
    return parse_class_names(config.class_names)


def geometry(config: DataConfig) -> Geometry:
    """The preprocessing settings of ``config`` (checked by ``DataConfig``)."""
    return Geometry(
        config.image_size, config.channels, config.frames, config.stack_depth, config.resize
    )


def open_cache(root: Path, config: DataConfig, site_id: str) -> TensorCache:
    """The site's tensor cache for this preprocessing config (a no-op one if disabled)."""
    settings = geometry(config).__dict__
    directory = site_cache_dir(config.cache_dir, root, site_id) if config.cache else None
    return TensorCache(directory, config_key(settings))


def ingest_site(
    root: Path,
    config: DataConfig,
    site_id: str,
    *,
    console: Console | None = None,
    on_file: Callable[[], None] | None = None,
) -> SiteIngest:
    """Read a site folder into tensors; never raises for a bad file unless ``strict``."""
    shape = geometry(config)
    manifest = read_manifest(root, site_id, class_names(config))
    result = SiteIngest(site_id, root, manifest.layout)

    def skip(path: Path, reason: str, fatal: bool = True) -> None:
        if config.strict and fatal:
            raise SiteDataError(site_id, reason, path)
        result.skipped.append(SkippedFile(path, reason, fatal))

    for problem in manifest.skipped:
        skip(problem.path, problem.reason, problem.fatal)
    cache = open_cache(root, config, site_id)
    with quiet_pydicom(), DecodeWorkers(worker_count(config.workers)) as workers:
        # pydicom's warnings can quote tag values: keep PHI out of logs
        opened, members = _read_headers(manifest.entries, cache, skip, workers)
        members = _resolve_duplicates(members, root, class_names(config), skip)
        samples, series_problems = group_samples(members, root, config.test_fraction, config.frames)
        for problem in series_problems:
            skip(problem.path, problem.reason)
        todo = [sample for sample in samples if not cache.has_sample(sample.key)]
        if workers.parallel(len(todo)):
            opened.clear()  # workers open their own files; free the headers read here
            jobs = [DecodeJob(sample, shape) for sample in todo]
            decoded: Iterator[list[torch.Tensor] | str] = workers.map(decode_job, jobs)
        else:
            decoded = (_decode(sample, shape, opened) for sample in todo)
        with _progress_bar(console, site_id, sum(len(s.members) for s in todo)) as advance:
            for sample, tensors in zip(todo, decoded, strict=True):
                cache.put_sample(sample.key, tensors)
                for member in sample.members:
                    opened.pop(member.digest, None)
                    advance()
                    if on_file is not None:
                        on_file()
        result.warnings.extend(workers.warnings)
    result.decoded = len(todo)
    for sample in samples:
        found = cache.sample(sample.key)
        if isinstance(found, str):
            for member in sample.members:
                skip(member.entry.path, found)
            continue
        result.samples.append(sample)
        result.images[sample.split].extend(found)
        result.labels[sample.split].extend([sample.label] * len(found))
        result.groups[sample.split].extend([sample.info.groups] * len(found))
    result.from_cache = len(samples) - len(todo)
    problem = cache.flush()
    if problem is not None:
        result.warnings.append(problem)
    return result


def _read_headers(
    entries: list[LabelledFile],
    cache: TensorCache,
    skip: Callable[[Path, str], None],
    workers: DecodeWorkers,
) -> tuple[dict[str, Dataset], list[Member]]:
    """Every readable entry as a ``Member``; headers not in the cache are parsed (in workers
    for a large first ingest; here otherwise, keeping the opened datasets for decoding)."""
    digests: list[tuple[LabelledFile, str]] = []
    for entry in entries:
        try:
            digests.append((entry, cache.digest(entry.path)))
        except OSError as exc:
            skip(entry.path, f"cannot read file ({exc.strerror or type(exc).__name__})")
    unknown = {digest: entry.path for entry, digest in digests if cache.file_info(digest) is None}
    opened: dict[str, Dataset] = {}
    paths = list(unknown.values())
    if workers.parallel(len(paths)):
        infos: Iterator[DicomInfo | str] = workers.map(read_info, paths)
    else:
        infos = (_open_and_describe(path, digest, opened) for digest, path in unknown.items())
    for digest, info in zip(unknown, infos, strict=True):
        cache.put_file_info(digest, info)
    members: list[Member] = []
    for entry, digest in digests:
        info = cache.file_info(digest)
        if isinstance(info, str) or info is None:
            skip(entry.path, info or "unreadable DICOM header")
            continue
        members.append(Member(entry, digest, info))
    return opened, members


def _open_and_describe(path: Path, digest: str, opened: dict[str, Dataset]) -> DicomInfo | str:
    try:
        dataset = open_dicom(path)
        info = describe(dataset)
    except DicomReadError as problem:
        return str(problem)
    except Exception as exc:  # never a traceback (its text could quote tag values)
        return f"unreadable DICOM header ({type(exc).__name__})"
    opened[digest] = dataset
    return info


def read_info(path: Path) -> DicomInfo | str:
    """A file's header summary, or the reason it is unusable (a worker job; never raises)."""
    return _open_and_describe(path, "", {})


@dataclass(frozen=True)
class DecodeJob:
    """One sample to decode in a worker process (the worker opens its files itself)."""

    sample: Sample
    shape: Geometry


def decode_job(job: DecodeJob) -> list[torch.Tensor] | str:
    """A worker job: the sample's tensors, or the reason it cannot be decoded."""
    return _decode(job.sample, job.shape, {})


def _resolve_duplicates(
    members: list[Member],
    root: Path,
    names: tuple[str, ...],
    skip: Callable[[Path, str], None],
) -> list[Member]:
    """Keep one file per image; never choose silently between two labels.

    Two readable files are the same image when their content is identical or they carry the
    same SOPInstanceUID. Under one label the first (in manifest order) is kept and the others
    are skipped as duplicates; under different labels every copy is skipped, each reason
    naming a copy with another label. Unreadable files were dropped before this step, so a
    damaged copy never costs an intact one.
    """
    parent = list(range(len(members)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for index, member in enumerate(members):
        keys = [("content", member.digest)]
        if member.info.sop_instance_uid:
            keys.append(("uid", member.info.sop_instance_uid))
        for key in keys:
            if key in first:
                parent[find(index)] = find(first[key])
            else:
                first[key] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(members)):
        groups.setdefault(find(index), []).append(index)
    dropped: set[int] = set()
    for indices in groups.values():
        if len(indices) == 1:
            continue
        copies = [members[i] for i in indices]
        if len({m.entry.label for m in copies}) == 1:
            kept = copies[0]
            for index, member in zip(indices[1:], copies[1:], strict=True):
                what = "content" if member.digest == kept.digest else "image (SOPInstanceUID)"
                skip(
                    member.entry.path, f"same {what} as {shown(kept.entry.path, root)} (duplicate)"
                )
                dropped.add(index)
            continue
        for index, member in zip(indices, copies, strict=True):
            other = next(m for m in copies if m.entry.label != member.entry.label)
            labels = f"{_name(member.entry.label, names)} vs {_name(other.entry.label, names)}"
            skip(
                member.entry.path,
                f"same image as {shown(other.entry.path, root)} under another label ({labels})",
            )
            dropped.add(index)
    return [m for i, m in enumerate(members) if i not in dropped]


def _name(label: int, names: tuple[str, ...]) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _decode(
    sample: Sample, shape: Geometry, opened: dict[str, Dataset]
) -> list[torch.Tensor] | str:
    try:
        datasets = [
            opened[m.digest] if m.digest in opened else open_dicom(m.entry.path)
            for m in sample.members
        ]
        return sample_tensors(sample, datasets, shape)
    except DicomReadError as problem:
        return str(problem)
    except Exception as exc:  # never a traceback (its text could quote tag values)
        return f"cannot decode ({type(exc).__name__})"


@contextmanager
def _progress_bar(
    console: Console | None, site_id: str, total: int
) -> Iterator[Callable[[], None]]:
    """A rich progress bar for decoding, or a no-op when there is no console or no work."""
    if console is None or total == 0:
        yield lambda: None
        return
    columns = (
        TextColumn(f"ingest {site_id}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=console.is_terminal) as progress:
        task = progress.add_task("files", total=total)
        yield lambda: progress.advance(task)

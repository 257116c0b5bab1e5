"""Read a DICOM site folder once: manifest -> content hashes -> headers -> samples -> tensors.

Every step consults the site's ``TensorCache`` first, so a folder that did not change is
loaded without parsing any DICOM. Unusable inputs (see ``SkippedFile`` reasons) are recorded
and skipped, or stop the load with a one-line ``SiteDataError`` when ``strict`` is set.
Decoding shows a rich progress bar on the given console (nothing is drawn for cached data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydicom.dataset import Dataset
from rich.console import Console

from common.config import DataConfig, parse_class_names
from common.data.cache import TensorCache, config_key, file_sha256, site_cache_dir
from common.data.clinical import sample_record
from common.data.dicom import DicomInfo, DicomReadError, describe, open_dicom, quiet_pydicom
from common.data.manifest import SPLITS, LabelledFile, SkippedFile, read_manifest, shown
from common.data.volumes import (
    Geometry,
    Member,
    Sample,
    group_samples,
    joins_a_series,
    sample_tensors,
)
from common.data.workers import DecodeWorkers, worker_count
from common.errors import SiteDataError
from common.progress import file_progress


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
    # per image: its raw clinical values (``common.data.clinical``), never sent as such
    clinical: dict[str, list[dict[str, str]]] = field(
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
        headers = _read_headers(manifest.entries, cache, skip, workers, shape, console, site_id)
        members = _resolve_duplicates(headers.members, root, class_names(config), skip)
        samples, series_problems = group_samples(members, root, config.test_fraction, config.frames)
        for problem in series_problems:
            skip(problem.path, problem.reason)
        todo = [sample for sample in samples if not cache.has_sample(sample.key)]
        ready = {s.key: headers.decoded[s.key] for s in todo if s.key in headers.decoded}
        rest = [sample for sample in todo if sample.key not in ready]
        opened = headers.opened
        if workers.parallel(len(rest)):
            opened.clear()  # workers open their own files; free the headers read here
            jobs = [DecodeJob(sample, shape) for sample in rest]
            decoded: Iterator[list[torch.Tensor] | str] = workers.map(decode_job, jobs)
        else:
            decoded = (decode_sample(sample, shape, opened) for sample in rest)
        with file_progress(
            console, f"decode {site_id}", sum(len(s.members) for s in rest)
        ) as advance:
            for sample in todo:
                from_worker = sample.key in ready
                cache.put_sample(sample.key, ready[sample.key] if from_worker else next(decoded))
                for member in sample.members:
                    opened.pop(member.digest, None)
                    if not from_worker:
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
        result.clinical[sample.split].extend([sample_record(sample)] * len(found))
    result.from_cache = len(samples) - len(todo)
    problem = cache.flush()
    if problem is not None:
        result.warnings.append(problem)
    return result


@dataclass
class _Headers:
    members: list[Member]
    opened: dict[str, Dataset]  # datasets parsed in this process, kept for decoding
    decoded: dict[str, list[torch.Tensor] | str]  # digest -> a standalone file's sample


def _read_headers(
    entries: list[LabelledFile],
    cache: TensorCache,
    skip: Callable[[Path, str], None],
    workers: DecodeWorkers,
    shape: Geometry,
    console: Console | None,
    site_id: str,
) -> _Headers:
    """Every readable entry as a ``Member``, in manifest order. Files the cache does not
    know are hashed and parsed here (the datasets kept for decoding) or, for a large first
    ingest, in worker processes, which also decode each file that is a sample on its own:
    one read of each file, from the first moment."""
    slots: list[tuple[LabelledFile, str | None]] = []
    fingerprints: dict[Path, list[int]] = {}
    for entry in entries:
        try:
            digest, fingerprints[entry.path] = cache.known_digest(entry.path)
        except OSError as exc:
            skip(entry.path, f"cannot read file ({exc.strerror or type(exc).__name__})")
            continue
        slots.append((entry, digest))
    needs = [
        index
        for index, (_, digest) in enumerate(slots)
        if digest is None or cache.file_info(digest) is None
    ]
    headers = _Headers([], {}, {})
    if workers.parallel(len(needs)):
        results = workers.map(read_job, [ReadJob(slots[i][0], shape) for i in needs])
        with file_progress(console, f"read {site_id}", len(needs)) as advance:
            for index, (digest, info, tensors) in zip(needs, results, strict=True):
                entry = slots[index][0]
                if digest is not None:
                    cache.remember_digest(entry.path, fingerprints[entry.path], digest)
                    cache.put_file_info(digest, info)
                    if tensors is not None:
                        headers.decoded[digest] = tensors
                else:
                    skip(entry.path, str(info))
                slots[index] = (entry, digest)
                advance()
    else:
        for index in needs:
            entry, digest = slots[index]
            try:
                digest = digest or cache.digest(entry.path)
            except OSError as exc:
                skip(entry.path, f"cannot read file ({exc.strerror or type(exc).__name__})")
                slots[index] = (entry, None)
                continue
            slots[index] = (entry, digest)
            if cache.file_info(digest) is None:
                cache.put_file_info(digest, read_header(entry.path, digest, headers.opened))
    for entry, found in slots:
        if found is None:
            continue  # unreadable: skipped above
        info = cache.file_info(found)
        if isinstance(info, str) or info is None:
            skip(entry.path, info or "unreadable DICOM header")
            continue
        headers.members.append(Member(entry, found, info))
    return headers


def read_header(path: Path, key: str, opened: dict[str, Dataset]) -> DicomInfo | str:
    """A file's header summary, or the short reason it is unusable (never raises); the
    parsed dataset is kept in ``opened[key]`` for decoding."""
    try:
        dataset = open_dicom(path)
        info = describe(dataset)
    except DicomReadError as problem:
        return str(problem)
    except Exception as exc:  # never a traceback (its text could quote tag values)
        return f"unreadable DICOM header ({type(exc).__name__})"
    opened[key] = dataset
    return info


@dataclass(frozen=True)
class ReadJob:
    """One file for a worker: hash it, parse its header and, if it is a sample on its own,
    decode it."""

    entry: LabelledFile
    shape: Geometry


def read_job(
    job: ReadJob,
) -> tuple[str | None, DicomInfo | str, list[torch.Tensor] | str | None]:
    """A worker job: the file's sha256 (None if it cannot be read), its header summary or
    why it is unusable, and, for a file that is its own sample (not a slice grouped with its
    series), that sample decoded."""
    try:
        digest = file_sha256(job.entry.path)
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or type(exc).__name__})", None
    opened: dict[str, Dataset] = {}
    info = read_header(job.entry.path, digest, opened)
    if isinstance(info, str) or joins_a_series(job.entry, info, job.shape.frames):
        return digest, info, None
    member = Member(job.entry, digest, info)
    sample = Sample(digest, (member,), job.entry.label, "")
    return digest, info, decode_sample(sample, job.shape, opened)


@dataclass(frozen=True)
class DecodeJob:
    """One sample to decode in a worker process (the worker opens its files itself)."""

    sample: Sample
    shape: Geometry


def decode_job(job: DecodeJob) -> list[torch.Tensor] | str:
    """A worker job: the sample's tensors, or the reason it cannot be decoded."""
    return decode_sample(job.sample, job.shape, {})


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


def decode_sample(
    sample: Sample, shape: Geometry, opened: dict[str, Dataset]
) -> list[torch.Tensor] | str:
    """A sample's model tensors, or the short reason it cannot be decoded (never raises).

    Members already parsed are taken from ``opened`` (keyed by member digest); the others
    are opened and added to it, so a caller that needs the datasets afterwards has them.
    """
    try:
        for member in sample.members:
            if member.digest not in opened:
                opened[member.digest] = open_dicom(member.entry.path)
        return sample_tensors(sample, [opened[m.digest] for m in sample.members], shape)
    except DicomReadError as problem:
        return str(problem)
    except Exception as exc:  # never a traceback (its text could quote tag values)
        return f"cannot decode ({type(exc).__name__})"

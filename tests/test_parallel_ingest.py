"""A first ingest decoded in worker processes gives exactly what one process gives.

Same tensors, labels, splits and skip reasons for a messy export (every kind of bad file,
plus enough real CT/MR copies to be worth parallel decoding); a worker killed mid-ingest
costs time, never files.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from client.site import site_data_config
from common.config import DataConfig
from common.data.ingest import ingest_site
from common.data.workers import MIN_PARALLEL_JOBS, DecodeWorkers, worker_count
from common.errors import ConfigError
from tests.messy_site import build_messy_site
from tests.shared_data import dicom_file

SOURCES = ("ct_series_3slice/01.dcm", "ct_series_3slice/02.dcm", "mr_prostate_tcia_explicit_le.dcm")
PARENT = os.getpid()


def _site(root: Path, extra: int = 24) -> Path:
    """The messy export, ``extra`` real files with new UIDs (each its own sample, decoded
    while its header is read) and one 3-slice CT series (grouped, then decoded)."""
    build_messy_site(root)
    rows = []
    for index in range(extra):
        ds = pydicom.dcmread(dicom_file(SOURCES[index % len(SOURCES)]))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        relative = f"extra/{index:03d}.dcm"
        (root / "extra").mkdir(exist_ok=True)
        ds.save_as(root / relative)
        rows.append((relative, ("normal", "opacity")[index % 2], ("train", "test")[index % 3 == 0]))
    series = root / "series"  # a row naming a folder: its 3 CT slices are one sample
    series.mkdir()
    for slice_file in dicom_file("ct_series_3slice/01.dcm").parent.glob("*.dcm"):
        shutil.copy(slice_file, series / slice_file.name)
    rows.append(("series", "opacity", "train"))
    with open(root / "labels.csv", "a", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return root


def _outcome(root: Path, workers: int) -> tuple[dict, dict, set, int]:
    ingest = ingest_site(root, DataConfig(image_size=32, cache=False, workers=workers), "h")
    images = {split: torch.stack(t) if t else None for split, t in ingest.images.items()}
    skipped = {(str(s.path.relative_to(root)), s.reason) for s in ingest.skipped}
    return images, ingest.labels, skipped, ingest.decoded


def test_parallel_first_ingest_equals_single_process(tmp_path: Path) -> None:
    root = _site(tmp_path / "hospital")

    serial = _outcome(root, workers=1)
    parallel = _outcome(root, workers=2)

    assert DecodeWorkers(2).parallel(serial[3])  # enough samples to go to the workers
    for split, images in serial[0].items():
        other = parallel[0][split]
        assert (images is None and other is None) or torch.equal(images, other), split
    assert serial[1] == parallel[1]
    assert serial[2] == parallel[2] and len(serial[2]) >= 10  # every bad file, same reason
    assert serial[3] == parallel[3] == 24 + 4 + 1


def _pid(_: int) -> int:
    return os.getpid()


def _die_in_a_worker(job: tuple[int, int]) -> int:
    parent, value = job  # the parent's pid travels with the job (a fork server re-imports us)
    if os.getpid() != parent:
        os._exit(9)  # as an out-of-memory kill would end it
    return value * 2


def test_jobs_run_in_other_processes_and_keep_their_order() -> None:
    jobs = list(range(MIN_PARALLEL_JOBS * 2))
    with DecodeWorkers(2) as workers:
        pids = list(workers.map(_pid, jobs))
        assert list(workers.map(abs, [-j for j in jobs])) == jobs

    assert PARENT not in pids and len(pids) == len(jobs)


def test_a_killed_worker_costs_time_never_results() -> None:
    jobs = [(PARENT, value) for value in range(MIN_PARALLEL_JOBS * 2)]
    with DecodeWorkers(2) as workers:
        results = list(workers.map(_die_in_a_worker, jobs))

    assert results == [value * 2 for _, value in jobs]
    assert len(workers.warnings) == 1 and "died" in workers.warnings[0]


def test_small_jobs_and_one_worker_stay_in_this_process() -> None:
    assert not DecodeWorkers(2).parallel(MIN_PARALLEL_JOBS - 1)
    assert not DecodeWorkers(1).parallel(1000)
    assert list(DecodeWorkers(1).map(_pid, [1, 2])) == [PARENT, PARENT]
    assert worker_count(3) == 3 and worker_count(0) >= 1


def test_decode_workers_come_from_the_node_config() -> None:
    assert site_data_config({"decode-workers": 3}, DataConfig()).workers == 3
    assert site_data_config({"decode-workers": "1"}, DataConfig()).workers == 1
    assert site_data_config({}, DataConfig(workers=5)).workers == 0
    with pytest.raises(ConfigError, match="node config 'decode-workers' = -2"):
        site_data_config({"decode-workers": -2}, DataConfig())

"""Benchmark site ingest: first read (decode + preprocess + write cache) vs cached load.

Builds a site of N files, then runs each phase in a fresh process and reports images/s and
that process's peak resident memory:
- ``first ingest, 1 process``: empty cache, every file hashed, parsed, decoded, windowed,
  resized, cached, all in one process (``data.workers = 1``);
- ``first ingest, N workers``: the same with ``--workers`` decoding processes (default: one
  per core), reported as a ratio to the single process;
- ``cached load``: the same folder again: stat index + one packed tensor file, no parsing.

Sources (``--source``): ``ct`` copies the shared real 512x512 CT slices (uncompressed, with
their window and rescale) under new UIDs; ``ct-nowindow`` the same without the window
(percentile windowing); ``mr`` / ``cr`` copy the shared compressed MR (J2K 1024x1024) and CR
(JPEG 12-bit 2140x1760) files; ``synthetic`` writes generated CR-like images (explicit VR,
or J2K lossless with ``--syntax j2k``).

    PYTHONPATH=. python benchmarks/ingest.py --source ct --files 500 --image-size 64
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def generate(folder: Path, files: int, pixels: int, syntax: str) -> None:
    """Write ``files`` CR-like DICOM images with distinct content and a labels.csv."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:pixels, 0:pixels] / pixels
    base = 2000 + 1500 * np.exp(-(((xx - 0.5) / 0.35) ** 4 + ((yy - 0.5) / 0.4) ** 4))
    rows = []
    for index in range(files):
        image = base + rng.normal(0, 60, size=base.shape)
        stored = np.clip(image, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = f"img_{index:05d}.dcm"
        ds = FileDataset(name, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = generate_uid()
        ds.Modality = "CR"
        ds.Rows = ds.Columns = pixels
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = stored.tobytes()
        if syntax == "j2k":
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(folder / name, enforce_file_format=True)
        rows.append((name, "opacity" if index % 3 == 0 else "normal"))
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)


REAL_SOURCES = {
    "ct": ["ct_series_3slice/01.dcm", "ct_series_3slice/02.dcm", "ct_series_3slice/03.dcm"],
    "ct-nowindow": ["ct_series_3slice/01.dcm", "ct_series_3slice/02.dcm"],
    "mr": ["mr_j2k_lossy_1024.dcm"],
    "cr": ["cr_hip_jpeg_extended_12bit.dcm"],
}


def copy_real(folder: Path, files: int, source: str, dicom_dir: Path) -> None:
    """``files`` copies of shared real files, each with new SOP/series UIDs (distinct bytes)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    originals = [pydicom.dcmread(dicom_dir / name) for name in REAL_SOURCES[source]]
    if source == "ct-nowindow":  # percentile windowing instead of the file's window
        for original in originals:
            del original.WindowCenter, original.WindowWidth
    rows = []
    for index in range(files):
        ds = originals[index % len(originals)].copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        name = f"img_{index:05d}.dcm"
        ds.save_as(folder / name)
        rows.append((name, "opacity" if index % 3 == 0 else "normal"))
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)


def _phase(folder: str, image_size: int, cache_dir: str, workers: int) -> tuple[float, int, float]:
    """Load the site once in this (fresh) process: seconds, images, peak RSS in MiB."""
    import torch

    from common.config import DataConfig
    from common.data.sites import load_site

    torch.set_num_threads(1)
    config = DataConfig(image_size=image_size, cache_dir=cache_dir, workers=workers)
    started = time.perf_counter()
    data = load_site(Path(folder), config, "bench")
    seconds = time.perf_counter() - started
    images = len(data.train_y) + len(data.test_y) + len(data.val_y)  # type: ignore[arg-type]
    peak = max(
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return seconds, images, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("synthetic", *REAL_SOURCES), default="ct")
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--pixels", type=int, default=512, help="synthetic source only")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--syntax", choices=("explicit", "j2k"), default="explicit")
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    parser.add_argument("--runs", type=int, default=3, help="runs per phase (median shown)")
    parser.add_argument(
        "--dicom-dir", default=str(Path(__file__).parents[1].parent / "shared/data/dicom")
    )
    parser.add_argument("--workdir", help="keep the generated folder here (default: temp)")
    args = parser.parse_args()
    from common.data.workers import worker_count

    workers = worker_count(args.workers)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="medfed-ingest-"))
    folder, cache = work / "site", work / "cache"
    try:
        if not (folder / "labels.csv").exists():
            started = time.perf_counter()
            if args.source == "synthetic":
                generate(folder, args.files, args.pixels, args.syntax)
            else:
                copy_real(folder, args.files, args.source, Path(args.dicom_dir))
            print(f"generated {args.files} files in {time.perf_counter() - started:.1f} s")
        size_mb = sum(p.stat().st_size for p in folder.glob("*.dcm")) / 2**20
        print(f"folder: {args.files} files from '{args.source}', {size_mb:.0f} MiB")
        context = multiprocessing.get_context("spawn")
        phases = [
            ("first ingest, 1 process", 1, True),
            (f"first ingest, {workers} workers", workers, True),
            ("cached load", 1, False),
        ]
        rates: dict[str, float] = {}
        for name, phase_workers, cold in phases:
            results = []
            for _ in range(args.runs):
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    job = (str(folder), args.image_size, str(cache), phase_workers)
                    results.append(pool.submit(_phase, *job).result())
            seconds, images, peak = sorted(results)[len(results) // 2]
            rates[name] = images / seconds
            print(
                f"{name}: {images} images in {seconds:.2f} s = {rates[name]:,.0f} images/s, "
                f"peak RSS {peak:,.0f} MiB (image size {args.image_size})"
            )
        single, parallel = rates[phases[0][0]], rates[phases[1][0]]
        print(f"parallel / single process: {parallel / single:.2f}x with {workers} workers")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark site ingest: first read (decode + preprocess + write cache) vs cached load.

Generates N (default 1,000) 512x512 16-bit DICOM files (explicit VR little endian, or J2K
lossless with ``--syntax j2k``; every file has distinct content), then runs each phase in a
fresh process and reports files/s and that process's peak resident memory:
- ``first``: empty cache, every file hashed, parsed, decoded, windowed, resized, cached;
- ``cached``: the same folder again: stat index + one packed tensor file, no DICOM parsing.

    PYTHONPATH=. python benchmarks/ingest.py --files 1000 --image-size 64
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import resource
import shutil
import tempfile
import time
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


def _phase(folder: str, image_size: int, cache_dir: str) -> tuple[float, int, float]:
    """Load the site once in this (fresh) process: seconds, images, peak RSS in MiB."""
    import torch

    from common.config import DataConfig
    from common.data.sites import load_site

    torch.set_num_threads(1)
    config = DataConfig(image_size=image_size, cache_dir=cache_dir)
    started = time.perf_counter()
    data = load_site(Path(folder), config, "bench")
    seconds = time.perf_counter() - started
    images = len(data.train_y) + len(data.test_y) + len(data.val_y)  # type: ignore[arg-type]
    return seconds, images, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--pixels", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--syntax", choices=("explicit", "j2k"), default="explicit")
    parser.add_argument("--cached-runs", type=int, default=3)
    parser.add_argument("--workdir", help="keep the generated folder here (default: temp)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="medfed-ingest-"))
    folder, cache = work / "site", work / "cache"
    try:
        if not (folder / "labels.csv").exists():
            started = time.perf_counter()
            generate(folder, args.files, args.pixels, args.syntax)
            print(f"generated {args.files} files in {time.perf_counter() - started:.1f} s")
        shutil.rmtree(cache, ignore_errors=True)
        size_mb = sum(p.stat().st_size for p in folder.glob("*.dcm")) / 2**20
        print(
            f"folder: {args.files} x {args.pixels}x{args.pixels} ({args.syntax}), {size_mb:.0f} MiB"
        )
        context = multiprocessing.get_context("spawn")
        phases = [("first ingest", 1), ("cached load", args.cached_runs)]
        for name, runs in phases:
            results = []
            for _ in range(runs):
                with context.Pool(1) as pool:
                    results.append(pool.apply(_phase, (str(folder), args.image_size, str(cache))))
            seconds, images, peak = sorted(results)[len(results) // 2]
            print(
                f"{name}: {images} images in {seconds:.2f} s = {images / seconds:,.0f} images/s, "
                f"peak RSS {peak:,.0f} MiB (image size {args.image_size})"
            )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

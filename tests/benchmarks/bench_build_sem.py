"""Build throughput and memory of datasets_scripts/build_sem.py on the real smoke micrographs, replicated.

    python tests/benchmarks/bench_build_sem.py [--num_files 3000] [--images full|all] [--source folder|tar]

Each copy gets a distinct comment (a JPEG COM segment or a PNG tEXt chunk), so every file has its
own sha256 and none is dropped as a duplicate, while its pixels and its decoding cost are the real
image's. ``--images full`` replicates only the three 1024x768 NFFA-style JPEGs, what the 21k-image
archive is made of; ``all`` cycles through all 18 smoke images (mostly small tiles: optimistic).
Prints one line: files, seconds, images/s and CPU milliseconds per image (all processes: the figure
that says what a machine shared with other work would do alone), the peak resident memory of the
build's process and of its largest decoding process (the build must stay within 1 GB whatever the
archive's size), the extrapolated time for the 21,283-image archive, and the load average at the
start and the end.

Measured on the project's 2-core machine while shared (load average 7-10):
  --images full: 3000 files (1833 MB) -> 170 MB stored, 211.6 s, 14.2 images/s, 23.3 CPU ms/image
  --images all:  3000 files (370 MB)  -> 119 MB stored,  55.5 s, 54.1 images/s,  6.4 CPU ms/image
  (--source tar: the same CPU ms/image as a folder, measured at 600 files.)
At 23.3 CPU ms per full-size image, 2 idle cores do ~86 images/s: the 21k-image archive in ~4 minutes.
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from emvision.datasets_scripts.archive import build_sem_dataset

REAL_SEM_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "real_sem"


def with_comment(data: bytes, suffix: str, comment: bytes) -> bytes:
    """The same image with a comment added: new bytes, same pixels."""
    if suffix in (".jpg", ".jpeg"):
        assert data[:2] == b"\xff\xd8", "not a JPEG"
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]
    if suffix == ".png":
        header_end = 8 + 4 + 4 + 13 + 4  # signature + IHDR chunk
        body = b"Comment\x00" + comment
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
        return data[:header_end] + chunk + data[header_end:]
    raise ValueError(f"cannot add a comment to a {suffix} file")


def replicate(real_sem_dir: Path, destination: Path, num_files: int, images: str) -> int:
    originals = sorted(p for p in real_sem_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if images == "full":
        originals = [p for p in originals if p.name.startswith("L6_") or p.name.startswith("ajaypawar02")]
    payloads = [(p.parent.name, p.suffix.lower(), p.read_bytes()) for p in originals]
    total_bytes = 0
    for index in range(num_files):
        category, suffix, data = payloads[index % len(payloads)]
        copy = with_comment(data, suffix, f"benchmark copy {index}".encode())
        target = destination / category / f"copy_{index:06d}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(copy)
        total_bytes += len(copy)
    return total_bytes


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _cpu_seconds() -> float:
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def run(num_files: int = 3000, images: str = "full", source_kind: str = "folder", num_workers: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_build_sem-") as scratch:
        scratch = Path(scratch)
        source = scratch / "source"
        total_bytes = replicate(REAL_SEM_DIR, source, num_files, images)
        if source_kind == "tar":
            archive = scratch / "source.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(source, arcname="SEM")
            source = archive
        load = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        rss_before = _peak_rss_mb(resource.RUSAGE_SELF)
        started = time.perf_counter()
        report = build_sem_dataset(source, scratch / "out", num_workers=num_workers, show_progress=True)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before  # this process + its finished decoding workers
        stored = sum(f.stat().st_size for f in (scratch / "out" / "images").rglob("*.arrow"))
    assert report.num_images == num_files and not report.rejects, report.summary()
    return {
        "num_files": num_files,
        "images": images,
        "source": source_kind,
        "workers": num_workers if num_workers is not None else len(os.sched_getaffinity(0)),
        "seconds": seconds,
        "images_per_s": num_files / seconds,
        "cpu_ms_per_image": 1000 * cpu / num_files,
        "source_mb": total_bytes / 1e6,
        "stored_mb": stored / 1e6,
        "load_average": load,
        "load_average_end": os.getloadavg()[0],
        # peak resident set sizes (ru_maxrss): this process over its whole life (replicating included; its RSS
        # before the build is given too), and the largest decoding process
        "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
        "rss_before_build_mb": rss_before,
        "peak_worker_rss_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN),
        "archive_minutes": 21_283 / (num_files / seconds) / 60,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_files", type=int, default=3000)
    parser.add_argument("--images", choices=("full", "all"), default="full", help="full: the 1024x768 JPEGs only")
    parser.add_argument("--source", choices=("folder", "tar"), default="folder")
    parser.add_argument("--num_workers", type=int, default=None, help="default: all cores")
    args = parser.parse_args(argv)
    result = run(args.num_files, args.images, args.source, args.num_workers)
    print(
        f"build_sem: {result['num_files']} files ({result['images']}, {result['source']}, {result['source_mb']:.0f} MB -> "
        f"{result['stored_mb']:.0f} MB stored), {result['workers']} workers: {result['seconds']:.1f} s, "
        f"{result['images_per_s']:.1f} images/s, {result['cpu_ms_per_image']:.1f} CPU ms/image; peak RSS {result['peak_rss_mb']:.0f} MB "
        f"(before the build {result['rss_before_build_mb']:.0f} MB), largest decoding process {result['peak_worker_rss_mb']:.0f} MB; "
        f"21,283 images at this rate: {result['archive_minutes']:.1f} min "
        f"(load average {result['load_average']:.1f} at start, {result['load_average_end']:.1f} at the end)"
    )
    return 0


def test_build_throughput():
    """pytest tests/benchmarks/bench_build_sem.py -s: a short run of the same measurement."""
    result = run(num_files=300)
    print(f"\nbuild_sem: {result['images_per_s']:.1f} images/s on {result['num_files']} full-size copies")


if __name__ == "__main__":
    sys.exit(main())

"""Cluster benchmark: `prepare` on a local Dask cluster of 1 worker against 2 workers, same clips, fresh run folders.

Run from the repository root:  python bench/cluster.py [CLIP_DIR] [--samples 96] [--repeats 2]
The clips are copied under new names until there are ``--samples`` of them (listed in a generic CSV). Each run is a
fresh ``python cli.py prepare --dask-local N`` in its own process and --work folder; the timed figure is the stage's
own wall time as recorded in the manifest (planning, all shards on the workers, recording), so interpreter start-up
and cluster start-up, the same for both, do not dilute the ratio; the whole command's time is shown beside it.
Beside it, in the same run, the machine's own ceiling: a pure-Python CPU loop in 1 process against 2, which on
virtual machines can be well under 2x. The last line printed is one JSON object (for CI and the README).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "grid"
VIDEO_SUFFIXES = {".mpg", ".mp4", ".avi", ".mov", ".mkv"}


def make_dataset(clips: list[Path], root: Path, samples: int) -> Path:
    """Copy ``clips`` round-robin under distinct names until there are ``samples``; return the listing CSV."""
    (root / "v1").mkdir(parents=True)
    rows = []
    for k in range(samples):
        clip = clips[k % len(clips)]
        name = f"c{k:03d}_{clip.stem}{clip.suffix}"
        shutil.copy(clip, root / "v1" / name)
        rows.append(
            {
                "id": f"c{k:03d}",
                "label": clip.stem,
                "speaker": f"s{k % 3}",
                "split": ("train", "val", "test")[k % 3],
                "path:v1": f"v1/{name}",
            }
        )
    listing = root / "listing.csv"
    with open(listing, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "label", "speaker", "split", "path:v1"])
        writer.writeheader()
        writer.writerows(rows)
    return listing


def _spin(_: int) -> int:
    """A fixed amount of pure-Python CPU work (about 0.3 s on one core), no memory traffic to speak of."""
    total = 0
    for i in range(4_000_000):
        total += i * i
    return total


def cpu_ceiling(items: int = 8, repeats: int = 2) -> float:
    """How much faster 2 processes run ``items`` CPU-bound tasks than 1 (best of ``repeats`` each): the most any
    2-worker run can gain on this machine."""
    best = {}
    for _ in range(repeats):
        for workers in (1, 2):
            with Pool(workers) as pool:
                started = time.perf_counter()
                pool.map(_spin, range(items), chunksize=1)
                best[workers] = min(best.get(workers, float("inf")), time.perf_counter() - started)
    return best[1] / best[2]


def run_prepare(root: Path, listing: Path, work: Path, workers: int, shard_size: int) -> tuple[float, float, dict]:
    """One fresh ``prepare`` on a local cluster of ``workers``; (stage seconds, command seconds, run summary)."""
    command = [
        sys.executable,
        str(REPO / "cli.py"),
        "prepare",
        "--quiet",
        "--work",
        str(work),
        "--dataset",
        "generic",
        "--root",
        str(root),
        "--option",
        f"listing={listing}",
        "--shard-size",
        str(shard_size),
        "--dask-local",
        str(workers),
        "--contact-sheet",
        "0",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    header = json.loads((work / "manifest.jsonl").read_text().splitlines()[0])
    summary = header["runs"][-1]["summary"]
    if summary["failed"] or summary["done"] != summary["total"]:
        raise SystemExit(f"prepare with {workers} worker(s) did not finish every sample: {summary}")
    return summary["seconds"], wall, summary


def main(argv: list[str] | None = None) -> dict:
    """Time prepare with 1 and 2 Dask workers (interleaved, fastest of N); print a table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("clips", nargs="?", type=Path, default=DEFAULT_CLIPS, help="folder of talking-face videos")
    parser.add_argument("--samples", type=int, default=96, help="samples after replicating the clips")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count; the fastest counts")
    parser.add_argument("--shard-size", type=int, default=1, help="samples per shard (the unit a worker takes)")
    parser.add_argument("--keep", type=Path, help="keep the data and run folders here instead of a temporary folder")
    args = parser.parse_args(argv)
    clips = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if args.clips.is_dir() else []
    if not clips:
        parser.error(f"no videos in {args.clips}")
    load = os.getloadavg()[0]  # other work on the machine skews the ratio; shown with the result
    base = args.keep or Path(tempfile.mkdtemp(prefix="mpview-bench-cluster-"))
    try:
        listing = make_dataset(clips, base / "data", args.samples)
        best: dict[int, tuple[float, float]] = {}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                stage, wall, _ = run_prepare(
                    base / "data", listing, base / f"work-{workers}w-{repeat}", workers, args.shard_size
                )
                old = best.get(workers, (float("inf"), float("inf")))
                best[workers] = (min(old[0], stage), min(old[1], wall))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    ceiling = cpu_ceiling()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"prepare on {args.samples} clips ({len(clips)} distinct, shard size {args.shard_size}), local Dask cluster, "
        f"{cores} cores, "
        f"best of {args.repeats}; load average at start: {load:.1f}"
    )
    print(f"{'workers':>8} {'stage s':>9} {'clips/s':>8} {'command s':>10}")
    for workers, (stage, wall) in sorted(best.items()):
        print(f"{workers:>8} {stage:>9.2f} {args.samples / stage:>8.2f} {wall:>10.2f}")
    speedup = best[1][0] / best[2][0]
    print(f"speedup {speedup:.2f}x; a pure-Python CPU loop gains {ceiling:.2f}x from 2 processes on this machine")
    summary = {
        "seconds_1_worker": round(best[1][0], 3),
        "seconds_2_workers": round(best[2][0], 3),
        "speedup": round(speedup, 3),
        "cpu_ceiling_2_vs_1": round(ceiling, 3),
        "speedup_of_ceiling": round(speedup / ceiling, 3),
        "samples": args.samples,
        "cores": cores,
        "command_seconds_1_worker": round(best[1][1], 3),
        "command_seconds_2_workers": round(best[2][1], 3),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

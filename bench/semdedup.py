"""semantic_dedup benchmark: synthetic clustered embeddings with planted near-duplicates, timed fit + apply.

    python bench/semdedup.py --n 1000000 --d 512 --device cpu          # target: <= 5 min on 2 cores
    python bench/semdedup.py --n 10000000 --d 768 --device cuda        # target: <= 3 min on one GPU
    python bench/semdedup.py --n 200000 --d 512 --files /tmp/semdedup  # through metadata parts on disk

Data: `n / 1000` random unit centres; each row is its centre plus noise (cosine ~0.75 to the centre,
~0.55 between rows of one centre: no accidental near-duplicates), then `--dup-frac` of the rows are
replaced by a copy of another row of their chunk turned by a cosine drawn from [0.96, 0.999]. Rows are
generated in chunks with torch on `--device` and stored as float16 (10M x 768 = 15 GB of host RAM).
uids are random 128-bit ids, sorted, so row order is already the fit's canonical uid order.

By default the fit runs on the in-memory matrix (`near_duplicates`, what `fit` does after reading the
pool); `--files DIR` instead writes `<stem>.parquet` + `<stem>.npz` parts and runs the filter's real
`fit` on a MetadataSource (adds reading, and float32 storage on cpu). `apply` is timed on batches of
10,000 uids as arrow strings, as the filter stage sees them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from curate.filters.semantic_dedup import SemanticDedup, near_duplicates

from curate.filtering.base import Batch
from curate.filtering.dedup import RemovedSet, sort_uids
from curate.filtering.kmeans import resolve_device
from curate.filtering.metadata import MetadataSource
from curate.filtering.pool_arrays import PoolMatrix
from curate.uids import UID_DTYPE, array_to_uids

CHUNK = 1 << 18


def generate(
    n: int, d: int, dup_frac: float, seed: int, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x float16 (n, d) unit rows, planted bool (n,), source int64 (n,): the row each copy came from)."""
    g = torch.Generator(device=device).manual_seed(seed)
    centres = torch.nn.functional.normalize(
        torch.randn(max(1, n // 1000), d, generator=g, device=device), dim=1
    )
    x = np.empty((n, d), np.float16)
    source = np.full(n, -1, np.int64)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        which = torch.randint(0, len(centres), (m,), generator=g, device=device)
        rows = centres[which] + 0.9 * torch.randn(m, d, generator=g, device=device) / d**0.5
        rows = torch.nn.functional.normalize(rows, dim=1)
        copies = torch.nonzero(torch.rand(m, generator=g, device=device) < dup_frac).flatten()
        copies = copies[copies > 0]
        if len(copies):
            src = (torch.rand(len(copies), generator=g, device=device) * copies).long()  # an earlier row
            u = rows[src]
            w = torch.randn(len(copies), d, generator=g, device=device)
            w = torch.nn.functional.normalize(w - (w * u).sum(1, keepdim=True) * u, dim=1)
            cos = 0.96 + 0.039 * torch.rand(len(copies), 1, generator=g, device=device)
            rows[copies] = cos * u + (1 - cos * cos).sqrt() * w
            source[s + copies.cpu().numpy()] = s + src.cpu().numpy()
        x[s : s + m] = rows.half().cpu().numpy()
    return x, source >= 0, source


def random_uids(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    uids = np.empty(n, UID_DTYPE)
    uids["f0"] = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    uids["f1"] = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    return uids[sort_uids(uids)]


def write_parts(directory: Path, uids: np.ndarray, x: np.ndarray, rows_per_part: int = 100_000) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for p, s in enumerate(range(0, len(x), rows_per_part)):
        stem = f"{p:08d}"
        pq.write_table(
            pa.table({"uid": array_to_uids(uids[s : s + rows_per_part])}), directory / f"{stem}.parquet"
        )
        np.savez(directory / f"{stem}.npz", l14_img=x[s : s + rows_per_part])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--clusters", type=int, default=None, help="default: the filter's, n / 10,000")
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--dup-frac", type=float, default=0.05)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=Path, default=None, help="write parts here and run the real fit on them")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    t0 = time.time()
    x, planted, source = generate(args.n, args.d, args.dup_frac, args.seed, device)
    uids = random_uids(args.n, args.seed)
    t_gen = time.time() - t0

    fit_dir = Path(tempfile.mkdtemp(prefix="semdedup-fit-"))
    f = SemanticDedup(
        SemanticDedup.Params(
            threshold=args.threshold, clusters=args.clusters, niter=args.niter, device=device
        )
    )
    t_write = 0.0
    if args.files:
        t1 = time.time()
        write_parts(args.files, uids, x)
        t_write = time.time() - t1
        del x
        t1 = time.time()
        f.fit(MetadataSource(str(args.files)), fit_dir)
        t_fit = time.time() - t1
        steps = json.loads((fit_dir / "summary.json").read_text())["seconds"]
    else:
        t1 = time.time()
        found, centroids, steps = near_duplicates(
            PoolMatrix(uids, x, np.ones(args.n, bool)),
            args.threshold,
            args.clusters,
            args.niter,
            args.seed,
            device,
        )
        RemovedSet.build(uids[found.removed], uids[found.keeper], found.cosine).save(fit_dir)
        t_fit = time.time() - t1
    f.load(fit_dir)
    removed = f.removed
    assert removed is not None

    batches = [pa.array(array_to_uids(uids[s : s + 10_000])) for s in range(0, args.n, 10_000)]
    t1 = time.time()
    dropped = 0
    for b in batches:
        dropped += int((~f.apply(Batch(pa.table({"uid": b}))).keep).sum())
    t_apply = time.time() - t1

    is_removed = removed.lookup(uids)[0]
    in_pair = planted.copy()
    in_pair[source[planted]] = True
    caught = is_removed[planted] | is_removed[source[planted]]
    print(
        json.dumps(
            {
                "n": args.n,
                "d": args.d,
                "device": device,
                "torch_threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                "clusters": args.clusters or "default (n/10000)",
                "threshold": args.threshold,
                "planted_copies": int(planted.sum()),
                "removed": len(removed),
                "planted_pairs_caught": round(float(caught.mean()), 4) if planted.any() else None,
                "removed_outside_planted_pairs": int((is_removed & ~in_pair).sum()),
                "apply_dropped": dropped,
                "seconds": {
                    "generate": round(t_gen, 1),
                    "write_parts": round(t_write, 1),
                    "fit": round(t_fit, 1),
                    "fit_steps": steps,
                    "apply": round(t_apply, 2),
                    "fit_plus_apply": round(t_fit + t_apply, 1),
                },
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if device == "cuda"
                else None,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    shutil.rmtree(fit_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

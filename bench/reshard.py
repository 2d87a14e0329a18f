"""Reshard benchmark: `curate reshard` beside `cp -r` of the same shards, in the same run.

    python bench/reshard.py [--work bench/data/reshard] [--shards 10] [--per-shard 10000] [--kb 35]
                            [--fraction 0.3] [--workers 2] [--regenerate]

Generates (once) an img2dataset-layout shard set under --work/shards: NNNNNNNN.tar (jpg ~35 KB of
random bytes behind a JPEG header, txt, json with the uid), NNNNNNNN.parquet (uid, key, status) and
_stats.json; 10 x 10k samples, ~3.5 GB, like DataComp's 512 px shards. The subset is a random 30% of
the uids plus 5 listed twice and 5 that are in no shard.

Page cache: caches cannot be dropped here, so both sides are measured warm: the shards are read once
(cat > /dev/null), then `cp -r` is timed, its copy removed, then the reshard is timed (fresh --out,
`--workers` processes). MB/s is given over the input bytes (what each side has to go through) and,
for the reshard, also over the bytes it writes. Target: reshard >= 40% of cp's MB/s (input bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from curate.reshard import reshard  # noqa: E402
from curate.tarsafe import TarWriter  # noqa: E402
from curate.uids import write_subset  # noqa: E402

JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")


def _generate(shards: Path, n_shards: int, per_shard: int, kb: int, rng: np.random.Generator) -> list[str]:
    """Write the shard set; returns every uid in input order."""
    shards.mkdir(parents=True, exist_ok=True)
    noise = rng.bytes(8 << 20)  # images are slices of this at random offsets: random-ish, cheap to make
    all_uids = []
    for shard in range(n_shards):
        uids = _hex(rng, per_shard)
        rows = []
        tmp = shards / f".{shard:08d}.tar.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        writer = TarWriter(fd)
        sizes = rng.integers(kb * 1024 // 2, kb * 1024 * 3 // 2, per_shard)
        for row, uid in enumerate(uids):
            key = f"{shard:08d}{row:04d}"
            start = int(rng.integers(0, len(noise) - sizes[row]))
            meta = {"uid": uid, "key": key, "status": "success", "caption": f"a photo number {row}"}
            writer.add_bytes(f"{key}.jpg", JPEG_HEAD + noise[start : start + int(sizes[row])])
            writer.add_bytes(f"{key}.json", json.dumps(meta).encode())
            writer.add_bytes(f"{key}.txt", meta["caption"].encode())
            rows.append({"uid": uid, "key": key, "status": "success"})
        writer.close()
        os.close(fd)
        os.replace(tmp, shards / f"{shard:08d}.tar")
        pq.write_table(pa.Table.from_pylist(rows), shards / f"{shard:08d}.parquet")
        (shards / f"{shard:08d}_stats.json").write_text(
            json.dumps({"count": per_shard, "successes": per_shard})
        )
        all_uids += uids
        print(f"  generated shard {shard + 1} of {n_shards}", flush=True)
    return all_uids


def _hex(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "data" / "reshard")
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--per-shard", type=int, default=10_000)
    ap.add_argument("--kb", type=int, default=35)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--regenerate", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shards = args.work / "shards"
    spec = args.work / "spec.json"
    want = {"shards": args.shards, "per_shard": args.per_shard, "kb": args.kb}
    if args.regenerate or not spec.exists() or json.loads(spec.read_text()) != want:
        shutil.rmtree(args.work, ignore_errors=True)
        print(f"generating {args.shards} x {args.per_shard} samples of ~{args.kb} KB under {shards}")
        uids = _generate(shards, args.shards, args.per_shard, args.kb, rng)
        (args.work / "uids.txt").write_text("\n".join(uids))
        spec.write_text(json.dumps(want))
    uids = (args.work / "uids.txt").read_text().split("\n")
    pick = rng.choice(len(uids), int(len(uids) * args.fraction), replace=False)
    chosen = [uids[i] for i in pick]
    subset_list = chosen + chosen[:5] + _hex(rng, 5)
    subset = args.work / "subset.npy"
    write_subset(subset, subset_list)
    in_bytes = sum(p.stat().st_size for p in shards.glob("*.tar"))
    print(
        f"input: {len(uids):,} samples, {in_bytes / 1e6:,.0f} MB in {args.shards} tars; subset "
        f"{len(subset_list):,} entries; {os.cpu_count()} CPUs; load average {_load()}"
    )

    subprocess.run(f"cat {shards}/*.tar > /dev/null", shell=True, check=True)  # warm both sides
    copy = args.work / "cp_copy"
    shutil.rmtree(copy, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(shards), str(copy)], check=True)
    subprocess.run(["sync"], check=True)
    cp_s = time.perf_counter() - t0
    shutil.rmtree(copy)

    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    load_before = _load()
    t0 = time.perf_counter()
    counts = reshard(shards, subset, out, workers=args.workers)
    subprocess.run(["sync"], check=True)
    rs_s = time.perf_counter() - t0
    out_bytes = _du(out)
    cp_mbs = _du(shards) / 1e6 / cp_s
    rs_mbs = in_bytes / 1e6 / rs_s
    print(f"cp -r (warm, + sync):         {cp_s:6.2f} s  {cp_mbs:8.1f} MB/s of input")
    print(
        f"reshard ({args.workers} workers, + sync):  {rs_s:6.2f} s  {rs_mbs:8.1f} MB/s of input, "
        f"{out_bytes / 1e6 / rs_s:.1f} MB/s written, {counts['output_count'] / rs_s:,.0f} samples/s written "
        f"({len(uids) / rs_s:,.0f} input samples/s)"
    )
    print(
        f"output: {counts['output_count']:,} samples in {counts['output_shard_count']} shards, "
        f"{out_bytes / 1e6:,.0f} MB; missing {counts['missing_count']} (expected 5)"
    )
    print(f"ratio reshard / cp (MB/s of input): {rs_mbs / cp_mbs:.2f} (target >= 0.40)")
    print(f"load average before reshard {load_before}, after {_load()}")


if __name__ == "__main__":
    main()

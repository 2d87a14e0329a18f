"""Benchmark of the text_based and image_based filters on synthetic data of DataComp's shapes.

    python bench/filter_text_image.py [--rows 1000000] [--k 1000] [--fit-points 100000]

text_based: `rows` captions (2-14 whitespace tokens: Zipf-distributed WordNet lemmas and stop words,
some capitalised or with punctuation attached, 3% unique junk tokens like IMG_123456), in parts of
100k rows, through TextBased.apply in one fresh filter (WordNet loaded once, token cache warm after
the first parts). image_based: `rows` x 768 unit vectors through ImageBased.apply with k centroids.
k-means: the full fit at k=1000 on `fit-points` points, and 2 iterations at k=10,000 timed and
extrapolated to DataComp's 20 iterations over 1e6 points (Lloyd's cost is linear in both). Prints
one JSON object, with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from curate.filters.image_based import ImageBased, ImageBasedParams
from curate.filters.text_based import TextBased

from curate.filtering.base import Batch
from curate.filtering.clustering import caption_checks, kmeans
from curate.filtering.langid import english_mask
from curate.filtering.synset_words import default_ids_path, matcher
from curate.filtering.wordnet import wordnet

PART = 100_000
STOP = [
    "a",
    "the",
    "of",
    "and",
    "in",
    "on",
    "with",
    "for",
    "to",
    "at",
    "by",
    "from",
    "is",
    "are",
    "this",
    "that",
    "my",
    "your",
    "our",
    "new",
    "best",
]


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lemmas = sorted({name.replace("_", " ").split()[0] for name in wordnet().all_lemma_names()})
    vocab = np.array(STOP + [lemmas[i] for i in rng.permutation(len(lemmas))[:60_000]], dtype=object)
    lengths = rng.integers(2, 15, n)
    ranks = np.minimum(rng.zipf(1.3, lengths.sum()) - 1, len(vocab) - 1)
    words = vocab[ranks]
    r = rng.random(len(words))
    words[r < 0.10] = [w.capitalize() for w in words[r < 0.10]]
    words[(r >= 0.10) & (r < 0.15)] = [w + "," for w in words[(r >= 0.10) & (r < 0.15)]]
    junk = r >= 0.97
    words[junk] = [f"IMG_{i}" for i in rng.integers(0, 10**9, junk.sum())]
    ends = np.cumsum(lengths)
    return [" ".join(words[e - m : e]) for e, m in zip(ends, lengths, strict=True)]


def bench_text(n: int) -> dict:
    t0 = time.perf_counter()
    wordnet()
    load_s = time.perf_counter() - t0
    texts = captions(n)
    distinct_tokens = len({t for c in texts for t in c.split()})
    f = TextBased()
    t0 = time.perf_counter()
    kept = 0
    for start in range(0, n, PART):
        part = texts[start : start + PART]
        kept += int(f.apply(Batch(pa.table({"text": part}))).keep.sum())
    apply_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    english = english_mask(texts)
    lang_s = time.perf_counter() - t0
    m = matcher(str(default_ids_path()))
    t0 = time.perf_counter()
    m.matches(texts)  # cache warm from the apply pass
    warm_s = time.perf_counter() - t0
    return {
        "captions": n,
        "distinct_tokens": distinct_tokens,
        "english_fraction": round(float(english.mean()), 3),
        "kept_fraction": round(kept / n, 3),
        "wordnet_load_s": round(load_s, 2),
        "apply_s": round(apply_s, 2),
        "apply_captions_per_s": round(n / apply_s),
        "of_which_langid_s": round(lang_s, 2),
        "wordnet_match_all_rows_warm_cache_s": round(warm_s, 2),
    }


def unit(rng: np.random.Generator, n: int, d: int = 768) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_image(n: int, k: int) -> dict:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "centroids.npy", unit(rng, k))
        np.save(Path(tmp) / "targets.npy", np.arange(0, k, 3))
        f = ImageBased(ImageBasedParams(reference="unused.npy", k=k))
        f.load(Path(tmp))
    text = pa.array(["a dog on the grass in the park"] * PART)
    apply_s = caption_s = 0.0
    for start in range(0, n, PART):
        size = min(PART, n - start)
        b = Batch(pa.table({"text": text[:size]}), {"l14_img": unit(rng, size)})
        t0 = time.perf_counter()
        f.apply(b)
        apply_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        caption_checks(b.table.column("text"), None)
        caption_s += time.perf_counter() - t0
    return {
        "rows": n,
        "dim": 768,
        "k": k,
        "apply_s": round(apply_s, 2),
        "apply_rows_per_s": round(n / apply_s),
        "of_which_caption_filter_s": round(caption_s, 2),
    }


def bench_fit(points: int) -> dict:
    rng = np.random.default_rng(2)
    x = unit(rng, points)
    t0 = time.perf_counter()
    kmeans(x, 1000, niter=20, seed=0)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kmeans(x, 10_000, niter=2, seed=0)
    two_s = time.perf_counter() - t0
    return {
        "kmeans_k1000_niter20_s": round(full_s, 1),
        "points": points,
        "kmeans_k10000_niter2_s": round(two_s, 1),
        "kmeans_k10000_niter20_1e6_points_extrapolated_s": round(two_s / 2 * 20 * (1e6 / points)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--fit-points", type=int, default=100_000)
    args = parser.parse_args()
    out = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    out["text_based"] = bench_text(args.rows)
    out["image_based_apply"] = bench_image(args.rows, args.k)
    out["image_based_fit"] = bench_fit(args.fit_points)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

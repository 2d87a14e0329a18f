"""fastText supervised-model inference (top-1 label) for many captions at once, in numba.

fasttext-predict costs ~11-15 µs a caption: a Python call, then C++ that builds a std::string per
character n-gram. This module reads the same model file and reproduces fastText 0.9.2's arithmetic
step for step (the tokenizer, FNV-1a n-gram hashes, the pruned bucket index, the float32 running
sum of input rows, the hierarchical-softmax depth-first search with its pruning and its tie rule),
so it gives the same top-1 label, over one UTF-8 buffer of captions in one call.

It covers what lid.176 uses: supervised models with hierarchical softmax, wordNgrams 1, a dense
or product-quantised input matrix and a dense output matrix. `parse_model` raises
`UnsupportedModel` for anything else, and callers go back to fasttext-predict.

Exactness notes: a quantised row is `norm * centroid` per element, rounded to float32, then added
to the running sum; we compute those products once at load time (same float32 products, added in
the same order). Every sum and product below is float32 where fastText's is, and float64 where
fastText's C++ promotes (`1. / (1 + exp(-f))`, `log(x + 1e-5)`). No fastmath, so LLVM keeps the
order of float operations.

The kernel compiles once per process (~2.5 s) or loads from numba's on-disk cache (~0.5 s): see `_jit`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

MAGIC = 793712314
VERSION = 12  # fastText 0.9.2 writes 12 and reads 11 and 12
LOSS_HS = 1
MODEL_SUP = 3
LABEL_PREFIX = b"__label__"
EOS = b"</s>"
KSUB = 256  # centroids per subquantizer (ProductQuantizer::ksub_)

# pushHash modes (Dictionary::pruneidx_size_): -1 no pruning, 0 drop every n-gram, >0 map through pruneidx
PRUNE_NONE, PRUNE_ALL, PRUNE_MAP = 0, 1, 2


# numba reads module-level arrays as compile-time constants
_SEPARATOR = np.zeros(256, dtype=np.bool_)  # Dictionary::readWord's separators (a caption's own '\n' is one)
_SEPARATOR[[ord(c) for c in " \n\r\t\v\f\0"]] = True
# uint32_t(int8_t(b)): Dictionary::hash sign-extends each byte
_SIGNED = np.array([b | 0xFFFFFF00 if b >= 0x80 else b for b in range(256)], dtype=np.int64)
_EOS = np.frombuffer(EOS, dtype=np.uint8)
_LABEL_PREFIX = np.frombuffer(LABEL_PREFIX, dtype=np.uint8)


class UnsupportedModel(ValueError):
    """A model file this reimplementation does not cover (use fasttext-predict for it)."""


@dataclass(frozen=True, eq=False)
class FastTextLid:
    """A supervised hierarchical-softmax fastText model as flat arrays for the numba kernel."""

    labels: tuple[str, ...]  # label i's name, '__label__' prefix included
    dim: int
    nwords: int
    minn: int
    maxn: int
    bucket: int
    prune_mode: int
    prune_map: np.ndarray  # int32[bucket]: pruned n-gram bucket -> its index, -1 if dropped (PRUNE_MAP)
    vocab_slots: np.ndarray  # int32 open-addressing table (power of 2) of entry ids, -1 empty
    vocab_hash: np.ndarray  # int64: each entry's FNV-1a hash
    word_offsets: np.ndarray  # int64[size + 1] into word_bytes
    word_bytes: np.ndarray  # uint8: every entry's bytes, concatenated
    word_type: np.ndarray  # int8: 0 word, 1 label
    eos_id: int  # the entry id of '</s>', -1 if the dictionary lacks it
    rows: np.ndarray  # float32[rows, dim]: input matrix, quantised rows already decoded
    output: np.ndarray  # float32[nlabels, dim]: output matrix (one row per inner tree node)
    left: np.ndarray  # int32[2 * nlabels - 1]: Huffman tree, as HierarchicalSoftmaxLoss builds it
    right: np.ndarray  # int32[2 * nlabels - 1]
    log_threshold: np.float32  # std_log(0.0): the DFS drops a branch whose score falls below it

    def predict(self, texts: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
        """Top-1 label index per caption (-1: no prediction), as fasttext-predict's
        `predict(text.replace("\\n", " ") + "\\n", 1, 0.0)` would answer; null counts as ""."""
        data, offsets = utf8_buffers(texts)
        n = len(offsets) - 1
        result = np.full(n, -1, dtype=np.int32)
        longest = int((offsets[1:] - offsets[:-1]).max()) if n else 0
        osz = self.output.shape[0]
        _predict(
            data,
            offsets,
            result,
            np.empty(longest + 2, dtype=np.uint8),
            np.zeros(self.dim, dtype=np.float32),
            np.empty(2 * osz + 2, dtype=np.int64),
            np.empty(2 * osz + 2, dtype=np.float32),
            self.minn,
            self.maxn,
            self.bucket,
            self.nwords,
            self.prune_mode,
            self.prune_map,
            self.vocab_slots,
            self.vocab_hash,
            self.word_offsets,
            self.word_bytes,
            self.word_type,
            self.eos_id,
            self.rows,
            self.output,
            self.left,
            self.right,
            self.log_threshold,
        )
        return result


def utf8_buffers(texts: pa.Array | pa.ChunkedArray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, int64 offsets) of a string array without a Python loop; nulls become empty."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.large_string())
    if not isinstance(texts, pa.Array):
        texts = pa.array(texts, pa.large_string())
    if not pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.large_string())
    if texts.null_count:  # a null slot may still own bytes: make it empty
        texts = texts.fill_null("")
    if not len(texts):
        return np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    _, offset_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offset_buf, dtype=np.int64, count=len(texts) + 1, offset=texts.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def fnv1a(word: bytes) -> int:
    """fastText's Dictionary::hash: FNV-1a over bytes sign-extended to 32 bits (its released models'
    quirk)."""
    h = 2166136261
    for c in word:
        h = ((h ^ (c | 0xFFFFFF00 if c >= 0x80 else c)) * 16777619) & 0xFFFFFFFF
    return h


class _Reader:
    """Sequential little-endian reads over the model file's bytes."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise UnsupportedModel("truncated model file")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def array(self, dtype: type, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if count < 0 or self.pos + size > len(self.buf):
            raise UnsupportedModel("truncated model file")
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return out

    def cstring(self) -> bytes:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise UnsupportedModel("truncated model file")
        word = self.buf[self.pos : end]
        self.pos = end + 1
        return word


def _product_quantizer(r: _Reader) -> tuple[int, int, int, int, np.ndarray]:
    """ProductQuantizer::load: (dim, nsubq, dsub, lastdsub, centroids)."""
    dim, nsubq, dsub, lastdsub = r.unpack("<4i")
    if dim <= 0 or nsubq <= 0 or dsub <= 0 or lastdsub <= 0 or (nsubq - 1) * dsub + lastdsub != dim:
        raise UnsupportedModel("unexpected product quantizer shape")
    return dim, nsubq, dsub, lastdsub, r.array(np.float32, dim * KSUB)


def _centroid_index(m: int, codes: np.ndarray, nsubq: int, dsub: int, lastdsub: int) -> np.ndarray:
    """ProductQuantizer::get_centroids(m, code): where subquantizer m's centroid starts."""
    codes = codes.astype(np.int64)
    if m == nsubq - 1:
        return m * KSUB * dsub + codes * lastdsub
    return (m * KSUB + codes) * dsub


def _quant_matrix(r: _Reader) -> np.ndarray:
    """QuantMatrix::load, decoded: row t element m*dsub+n is float32(norm_t * centroid[n]), exactly the
    product addcode adds to the hidden vector."""
    (qnorm,) = r.unpack("<?")
    m, n = r.unpack("<qq")
    (codesize,) = r.unpack("<i")
    codes = r.array(np.uint8, codesize)
    dim, nsubq, dsub, lastdsub, centroids = _product_quantizer(r)
    if dim != n or codesize != m * nsubq:
        raise UnsupportedModel("quantised matrix does not match its quantizer")
    codes = codes.reshape(m, nsubq)
    if qnorm:
        norm_codes = r.array(np.uint8, m)
        ndim, nnsubq, ndsub, nlastdsub, ncentroids = _product_quantizer(r)
        if ndim != 1:
            raise UnsupportedModel("unexpected norm quantizer")
        norm = ncentroids[_centroid_index(0, norm_codes, nnsubq, ndsub, nlastdsub)]
    else:
        norm = np.ones(m, dtype=np.float32)
    rows = np.empty((m, n), dtype=np.float32)
    for sub in range(nsubq):
        d = lastdsub if sub == nsubq - 1 else dsub
        start = _centroid_index(sub, codes[:, sub], nsubq, dsub, lastdsub)
        for k in range(d):
            rows[:, sub * dsub + k] = norm * centroids[start + k]  # float32 * float32, as addcode
    return rows


def _dense_matrix(r: _Reader) -> np.ndarray:
    """DenseMatrix::load."""
    m, n = r.unpack("<qq")
    if m < 0 or n <= 0:
        raise UnsupportedModel("unexpected dense matrix shape")
    return r.array(np.float32, m * n).reshape(m, n)


def _huffman_tree(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """HierarchicalSoftmaxLoss::buildTree: (left, right) child per node; leaves are 0..osz-1, the root is
    2*osz-2. Counts are taken in dictionary order, as fastText does (it expects them sorted)."""
    osz = len(counts)
    size = 2 * osz - 1
    count = [10**15] * size
    left = [-1] * size
    right = [-1] * size
    count[:osz] = counts
    leaf, node = osz - 1, osz
    for i in range(osz, size):
        mini = [0, 0]
        for j in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini[j] = leaf
                leaf -= 1
            else:
                mini[j] = node
                node += 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]
    return np.array(left, dtype=np.int32), np.array(right, dtype=np.int32)


def parse_model(path: str | Path) -> FastTextLid:
    """Read a fastText .bin/.ftz model (FastText::loadModel's layout), or raise UnsupportedModel."""
    r = _Reader(Path(path).read_bytes())
    magic, version = r.unpack("<ii")
    if magic != MAGIC or version > VERSION:
        raise UnsupportedModel("not a fastText model this reader knows")
    (dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn, _lr_rate) = r.unpack(
        "<12i"
    )
    r.unpack("<d")  # t
    if model != MODEL_SUP:
        raise UnsupportedModel("not a supervised model")
    if loss != LOSS_HS:
        raise UnsupportedModel(f"loss {loss} is not hierarchical softmax")
    if word_ngrams > 1:
        raise UnsupportedModel("word n-grams (wordNgrams > 1)")
    if version == 11:
        maxn = 0  # FastText::loadModel: old supervised models have no char n-grams

    size, nwords, nlabels = r.unpack("<3i")
    _ntokens, pruneidx_size = r.unpack("<qq")
    if size < 0 or not 0 <= nwords <= size or not 0 < nlabels <= size - nwords:
        raise UnsupportedModel("unexpected dictionary sizes")
    words: list[bytes] = []
    types = np.empty(size, dtype=np.int8)
    label_counts: list[int] = []
    for i in range(size):
        words.append(r.cstring())
        count, kind = r.unpack("<qb")
        types[i] = kind
        if kind == 1:
            label_counts.append(count)
    if len(label_counts) != nlabels:
        raise UnsupportedModel("label count does not match the dictionary header")
    pairs = r.array(np.int32, 2 * max(pruneidx_size, 0)).reshape(-1, 2)

    (quant_input,) = r.unpack("<?")
    if quant_input:
        rows = _quant_matrix(r)
    else:
        if pruneidx_size >= 0:
            raise UnsupportedModel("a pruned dictionary with a dense input matrix")  # fastText refuses too
        rows = _dense_matrix(r)
    (qout,) = r.unpack("<?")
    if qout and quant_input:
        raise UnsupportedModel("quantised output matrix")
    output = _dense_matrix(r)
    if r.pos != len(r.buf):
        raise UnsupportedModel("unexpected bytes after the output matrix")
    if rows.shape[1] != dim or output.shape != (nlabels, dim):
        raise UnsupportedModel("matrix shapes do not match the model's dimension")
    if bucket <= 0 and maxn > 0:
        raise UnsupportedModel("char n-grams without buckets")

    if pruneidx_size < 0:
        prune_mode, prune_map, top = PRUNE_NONE, np.zeros(0, np.int32), nwords + max(bucket, 0)
    elif pruneidx_size == 0:
        prune_mode, prune_map, top = PRUNE_ALL, np.zeros(0, np.int32), nwords
    else:
        prune_mode, prune_map = PRUNE_MAP, np.full(bucket, -1, dtype=np.int32)
        _, last = np.unique(pairs[::-1, 0], return_index=True)  # pruneidx_[first] = second: the last wins
        src, dst = pairs[len(pairs) - 1 - last].T
        if src.min() < 0 or src.max() >= bucket or dst.min() < 0:
            raise UnsupportedModel("pruned index out of range")
        prune_map[src] = dst
        top = nwords + int(dst.max()) + 1
    word_ids = np.flatnonzero(types == 0)
    if rows.shape[0] < max(top, int(word_ids.max()) + 1 if len(word_ids) else 0):  # every id must be a row
        raise UnsupportedModel("input matrix smaller than the dictionary and buckets")

    # the vocabulary as open addressing on the FNV hash; a repeated word maps to its last entry, as
    # Dictionary::load's word2int_ does
    nslots = 1 << max(4, (2 * size).bit_length())
    slots = np.full(nslots, -1, dtype=np.int32)
    hashes = np.array([fnv1a(w) for w in words], dtype=np.int64)
    slot_of: dict[bytes, int] = {}
    for i, (word, h) in enumerate(zip(words, hashes.tolist(), strict=True)):
        if word not in slot_of:
            s = h & (nslots - 1)
            while slots[s] != -1:
                s = (s + 1) & (nslots - 1)
            slot_of[word] = s
        slots[slot_of[word]] = i
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    word_offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(lengths, out=word_offsets[1:])
    word_bytes = np.frombuffer(b"".join(words), dtype=np.uint8) if size else np.zeros(0, np.uint8)
    left, right = _huffman_tree(label_counts)
    return FastTextLid(
        labels=tuple(w.decode("utf-8", "replace") for w in words[nwords : nwords + nlabels]),
        dim=dim,
        nwords=nwords,
        minn=minn,
        maxn=maxn,
        bucket=max(bucket, 1),
        prune_mode=prune_mode,
        prune_map=prune_map,
        vocab_slots=slots,
        vocab_hash=hashes,
        word_offsets=word_offsets,
        word_bytes=word_bytes,
        word_type=types,
        eos_id=int(slots[slot_of[EOS]]) if EOS in slot_of else -1,
        rows=np.ascontiguousarray(rows),
        output=np.ascontiguousarray(output),
        left=left,
        right=right,
        log_threshold=np.float32(math.log(float(np.float32(0.0)) + 1e-5)),  # std_log(threshold 0.0)
    )


@cache
def load_model(path: str) -> FastTextLid | None:
    """The parsed model, once per process and path; None when only fasttext-predict can run it."""
    try:
        return parse_model(path)
    except UnsupportedModel:
        return None


def _jit(func: Callable) -> Callable:
    """numba-compiled with an on-disk cache: the kernel takes ~2.5 s to compile, in every process that
    runs it (each filter worker, each test run); from the cache it loads in ~0.5 s. The cache lives in
    __pycache__ beside this file, or numba's user-wide cache directory where that is read-only;
    numba recompiles when this file changes. With no writable place, compile every time."""
    try:
        return numba.njit(nogil=True, cache=True)(func)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(func)


@_jit
def _predict(
    data: np.ndarray,
    offsets: np.ndarray,
    result: np.ndarray,
    word: np.ndarray,
    hidden: np.ndarray,
    stack_node: np.ndarray,
    stack_score: np.ndarray,
    minn: int,
    maxn: int,
    bucket: int,
    nwords: int,
    prune_mode: int,
    prune_map: np.ndarray,
    vocab_slots: np.ndarray,
    vocab_hash: np.ndarray,
    word_offsets: np.ndarray,
    word_bytes: np.ndarray,
    word_type: np.ndarray,
    eos_id: int,
    rows: np.ndarray,
    output: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    log_threshold: np.float32,
) -> None:
    """result[i] = top-1 label of caption i (left at -1 for none). word, hidden and the stacks are
    scratch space from the caller, and the byte tables are module constants: numpy calls and helper
    functions here cost seconds of compile time."""
    n = offsets.shape[0] - 1
    dim = rows.shape[1]
    osz = output.shape[0]
    mask = vocab_slots.shape[0] - 1
    for i in range(n):
        # Model::computeHidden: a float32 running sum of the input rows (Dictionary::getLine's `words`)
        # in order, then hidden.mul(float(1.0 / input.size()))
        for j in range(dim):
            hidden[j] = 0
        count = 0
        p = offsets[i]
        end = offsets[i + 1]
        saw_eos = False
        while True:  # Dictionary::readWord, token by token
            while p < end and _SEPARATOR[data[p]]:
                p += 1
            if p >= end:
                break
            a = p
            h = 2166136261
            while p < end and not _SEPARATOR[data[p]]:
                h = ((h ^ _SIGNED[data[p]]) * 16777619) & 0xFFFFFFFF  # Dictionary::hash
                p += 1
            length = p - a
            # Dictionary::find: the entry with these bytes, if any
            wid = -1
            s = h & mask
            while vocab_slots[s] != -1:
                e = vocab_slots[s]
                if vocab_hash[e] == h and word_offsets[e + 1] - word_offsets[e] == length:
                    same = True
                    base = word_offsets[e]
                    for k in range(length):
                        if word_bytes[base + k] != data[a + k]:
                            same = False
                            break
                    if same:
                        wid = e
                        break
                s = (s + 1) & mask
            is_eos = length == 4
            if is_eos:
                for k in range(4):
                    if data[a + k] != _EOS[k]:
                        is_eos = False
            if wid >= 0:
                is_word = word_type[wid] == 0
            else:  # Dictionary::getType(token): a label if it starts with '__label__'
                is_word = length < 9
                for k in range(min(length, 9)):
                    if data[a + k] != _LABEL_PREFIX[k]:
                        is_word = True
                        break
            if is_word:
                # Dictionary::addSubwords: the word's own row, then its char n-grams (none for '</s>')
                if wid >= 0:
                    for c in range(dim):
                        hidden[c] += rows[wid, c]
                    count += 1
                if not is_eos and maxn > 0:
                    size = length + 2
                    word[0] = 60  # '<'
                    for k in range(length):
                        word[k + 1] = data[a + k]
                    word[size - 1] = 62  # '>'
                    # Dictionary::computeSubwords
                    for st in range(size):
                        if (word[st] & 0xC0) == 0x80:
                            continue
                        g = 2166136261
                        j = st
                        nchar = 1
                        while j < size and nchar <= maxn:
                            g = ((g ^ _SIGNED[word[j]]) * 16777619) & 0xFFFFFFFF
                            j += 1
                            while j < size and (word[j] & 0xC0) == 0x80:
                                g = ((g ^ _SIGNED[word[j]]) * 16777619) & 0xFFFFFFFF
                                j += 1
                            if nchar >= minn and not (nchar == 1 and (st == 0 or j == size)):
                                b = g % bucket  # Dictionary::pushHash
                                if prune_mode == 2:
                                    b = prune_map[b]
                                if prune_mode != 1 and b >= 0:
                                    for c in range(dim):
                                        hidden[c] += rows[nwords + b, c]
                                    count += 1
                            nchar += 1
            if is_eos:
                saw_eos = True
                break
        if not saw_eos and eos_id >= 0 and word_type[eos_id] == 0:
            for c in range(dim):  # the line's trailing '\n' reads as '</s>', a word without n-grams
                hidden[c] += rows[eos_id, c]
            count += 1
        if count == 0:  # FastText::predict: no input, no prediction
            continue
        scale = np.float32(1.0 / count)
        for j in range(dim):
            hidden[j] *= scale
        # HierarchicalSoftmaxLoss::dfs with k = 1, as an explicit stack (left subtree first)
        best = -1
        best_score = np.float32(0.0)
        stack_node[0] = 2 * osz - 2
        stack_score[0] = np.float32(0.0)
        sp = 1
        while sp > 0:
            sp -= 1
            node = stack_node[sp]
            score = stack_score[sp]
            if score < log_threshold:
                continue
            if best >= 0 and score < best_score:
                continue
            if left[node] == -1 and right[node] == -1:
                best = node  # a leaf not below the best replaces it (ties go to the later leaf)
                best_score = score
                continue
            r = node - osz
            f = np.float32(0.0)
            for j in range(dim):
                f += output[r, j] * hidden[j]
            f = np.float32(1.0 / np.float64(np.float32(1.0) + math.exp(-f)))
            # std_log(x) = float(log(double(x) + 1e-5)), x a float; 1.0 - f is computed in double
            log_right = np.float32(math.log(np.float64(f) + 1e-5))
            log_left = np.float32(math.log(np.float64(np.float32(1.0 - np.float64(f))) + 1e-5))
            stack_node[sp] = right[node]
            stack_score[sp] = score + log_right
            stack_node[sp + 1] = left[node]
            stack_score[sp + 1] = score + log_left
            sp += 2
        result[i] = best

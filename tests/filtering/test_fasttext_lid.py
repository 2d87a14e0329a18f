"""The numba fastText kernel gives fasttext-predict's top-1 label, caption for caption.

fasttext-predict itself is the oracle: for lid.176.ftz on captions built to hit every tokenizer and
n-gram rule, and for small model files written here (dense, quantised, pruned, old-version), which
the oracle loads too. Models the kernel does not cover must go back to fasttext-predict.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.filtering import fasttext_lid
from curate.filtering.langid import _fasttext_model, default_model_path, english_mask, top_languages

PHRASES = [
    "a brown dog running on the beach",
    "the quick brown fox jumps over the lazy dog",
    "un chien brun qui court sur la plage",
    "ein brauner Hund, der am Strand läuft",
    "el perro marrón corre en la playa",
    "il cane marrone corre sulla spiaggia",
    "o cão marrom correndo na praia",
    "een bruine hond die op het strand rent",
    "en brun hund som springer på stranden",
    "brązowy pies biegnący po plaży",
    "hnědý pes běžící po pláži",
    "kahverengi köpek sahilde koşuyor",
    "коричневая собака бежит по пляжу",
    "кафяво куче тича по плажа",
    "καφέ σκύλος τρέχει στην παραλία",
    "כלב חום רץ על החוף",
    "كلب بني يركض على الشاطئ",
    "سگ قهوه ای در ساحل می دود",
    "भूरा कुत्ता समुद्र तट पर दौड़ रहा है",
    "বাদামী কুকুর সমুদ্র সৈকতে দৌড়াচ্ছে",
    "สุนัขสีน้ำตาลวิ่งบนชายหาด",
    "con chó nâu chạy trên bãi biển",
    "一只棕色的狗在海滩上奔跑",
    "浜辺を走る茶色の犬",
    "해변에서 달리는 갈색 개",
    "ruskea koira juoksee rannalla",
    "barna kutya fut a tengerparton",
    "câine maro care aleargă pe plajă",
    "anjing coklat berlari di pantai",
    "mbwa wa kahawia anakimbia ufukweni",
    "🐶🏖️ dog at the beach 🌊",
    "Café crème brûlée à la française",
    "naïve façade coöperate résumé",
    "I am a",
    "Berg",
    "sky sky chair",
    "los hermosa",
    "房子 厨房 大 大海 汽车",
    "ǅemal ǈubljana ǋegoš",
    "ﬁnance ﬂower ﬀ",
]
# fastText's separators, and Unicode spaces that it does not split on
SEPARATORS = [*" \n\r\t\v\f\0", "\r\n", "  ", " \n ", "\u00a0", "\u3000", "\u2028", "\x85"]
ODD = [
    "",
    " ",
    "\n",
    "\n\n\n",
    "\0",
    " \t\v\f\r\0\n ",
    "</s>",
    "a </s> b",
    "</s> hello world",
    "hello </s>",
    "hello</s> world",
    "__label__en",
    "__label__en hello world",
    "bonjour __label__en le monde",
    "__label__",
    "__label",
    "__label__xx chien",
    "___label__en dog",
    "<s> <unk> <pad>",
    "<>",
    "<dog>",
    "...",
    "!!! ??? ,,, ;;;",
    "12345 67890",
    "3.14159 2.71828 1.41421",
    "#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "\ufeffbom at the start",
    "zero\u200bwidth\u200bspaces",
    "combining e\u0301 a\u0300 o\u0308",
    "\U0010ffff\U000e0001 plane sixteen",
    "\ufffd\ufffd replacement",
    "\x7f\x01\x02\x1b controls",
    "\u0080\u0081\u009f C1 controls",
    "mixed 🇫🇷 flags 🇩🇪 and 👨‍👩‍👧 families",
]


def _oracle(path: str, texts: list[str]) -> list[str | None]:
    """fasttext-predict, called as langid calls it."""
    predict = _fasttext_model(path).f.predict
    out = []
    for text in texts:
        top = predict(text.replace("\n", " ") + "\n", 1, 0.0, "strict")
        out.append(top[0][1] if top else None)
    return out


def _kernel(path: str, texts: list[str]) -> list[str | None]:
    model = fasttext_lid.load_model(path)
    assert model is not None
    return [model.labels[i] if i >= 0 else None for i in model.predict(texts).tolist()]


def _varied_captions() -> list[str]:
    """Several thousand captions crossing languages with every kind of separator and odd token."""
    rng = random.Random(1)
    out = list(ODD)
    for phrase in PHRASES:
        words = phrase.split(" ")
        out += [phrase, phrase.upper(), phrase.title(), phrase.replace(" ", "")]
        for sep in SEPARATORS:
            out.append(sep.join(words))
            out.append(sep + phrase + sep)
            out.append(sep * 3 + sep.join(words) + "\n")
        for odd in rng.sample(ODD, 12):
            i = rng.randrange(len(words) + 1)
            out.append(" ".join(words[:i] + [odd] + words[i:]))
        out += list(phrase)  # single characters
        out.append(" ".join(rng.choice(PHRASES) for _ in range(3)))
    out += [chr(c) for c in range(1, 0x250)]
    out += [
        " ".join(rng.choice(PHRASES) for _ in range(300))[:10_000],  # 10k-character captions
        "x" * 10_000,
        "日本語" * 3_334,
        ("word " * 2_000).strip(),
        "\n".join(PHRASES),
    ]
    return out


def _random_strings(n: int, seed: int) -> list[str]:
    """Strings from a mixed alphabet weighted toward separators, '<', '>', '_' and multibyte."""
    rng = random.Random(seed)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyz ABCDE  ")
        + list(" \n\r\t\v\f\0<>/_-.,!0123")
        + list("éèüößñçåøłžščăîțşğ")
        + list("абвгдежзийклмнопрст")
        + list("漢字日本語中文한국어")
        + list("ابتثجحخدذرزسشصضطظعغ")
        + ["🐶", "🌊", "👍🏽", "\u00a0", "\u200b", "\ufeff", "\U0010ffff", "__label__", "</s>", "dog", "the"]
    )
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))) for _ in range(n)]


def test_default_model_matches_fasttext_predict_on_varied_captions() -> None:
    path = default_model_path()
    texts = _varied_captions()
    assert len(texts) > 2000
    assert _kernel(path, texts) == _oracle(path, texts)


def test_default_model_matches_fasttext_predict_on_random_strings() -> None:
    path = default_model_path()
    texts = _random_strings(4000, seed=0)
    assert _kernel(path, texts) == _oracle(path, texts)


def test_loader_sizes_match_the_header() -> None:
    path = default_model_path()
    buf = Path(path).read_bytes()
    magic, version = struct.unpack_from("<ii", buf, 0)
    dim, *_, bucket, minn, maxn, _lr = struct.unpack_from("<12i", buf, 8)
    size, nwords, nlabels, _ntokens, pruneidx_size = struct.unpack_from("<3iqq", buf, 8 + 48 + 8)
    assert (magic, version) == (fasttext_lid.MAGIC, 12)
    model = fasttext_lid.parse_model(path)
    assert (model.dim, model.bucket, model.minn, model.maxn) == (dim, bucket, minn, maxn)
    assert (model.nwords, len(model.labels), len(model.word_type)) == (nwords, nlabels, size)
    assert (dim, bucket, minn, maxn, nwords, nlabels, size) == (16, 2_000_000, 2, 4, 7235, 176, 7411)
    assert model.prune_mode == fasttext_lid.PRUNE_MAP
    assert int((model.prune_map >= 0).sum()) == pruneidx_size == 42765
    assert model.rows.shape == (50_000, 16) and model.rows.dtype == np.float32
    assert model.output.shape == (176, 16)
    assert model.left.shape == model.right.shape == (2 * 176 - 1,)
    assert model.eos_id == 0 and model.labels[0] == "__label__en"
    assert fasttext_lid.load_model(path) is fasttext_lid.load_model(path)  # parsed once per path


def test_arrow_inputs_slices_nulls_and_chunks() -> None:
    model = fasttext_lid.load_model(default_model_path())
    assert model is not None
    texts = [*PHRASES[:8], None, "", *PHRASES[8:16]]
    filled = ["" if t is None else t for t in texts]
    expected = model.predict(filled).tolist()
    arr = pa.array(texts, pa.string())
    chunked = pa.chunked_array([arr.slice(0, 5), arr.slice(5)])
    assert model.predict(arr).tolist() == model.predict(chunked).tolist() == expected
    assert model.predict(pa.array(["pad", *texts], pa.large_string()).slice(1)).tolist() == expected
    assert model.predict([]).shape == (0,) and model.predict(pa.chunked_array([], pa.string())).shape == (0,)


def test_english_mask_and_top_languages_follow_the_oracle() -> None:
    path = default_model_path()
    texts = _varied_captions()[:600] + [None]
    oracle = _oracle(path, [t or "" for t in texts])
    pairs = list(zip(texts, oracle, strict=True))
    assert english_mask(texts).tolist() == [bool(t) and o == "__label__en" for t, o in pairs]
    langs = top_languages(pa.array(texts, pa.string()))
    assert langs == [o.removeprefix("__label__") if t else None for t, o in pairs]


# --- small model files, written in fastText's format (FastText::saveModel) ---

VOCAB = ["</s>", "the", "dog", "a", "chien", "le", "hund", "der", "собака", "犬", "café", "x", "<s>"]


def _write_model(
    path: Path,
    *,
    seed: int,
    dim: int = 6,
    loss: int = fasttext_lid.LOSS_HS,
    word_ngrams: int = 1,
    version: int = 12,
    nlabels: int = 9,
    minn: int = 2,
    maxn: int = 4,
    bucket: int = 500,
    quantised: bool = False,
    qnorm: bool = True,
    dsub: int = 2,
    pruned: int = -1,  # pruneidx size: -1 none, 0 every n-gram dropped, >0 kept buckets
) -> str:
    rng = np.random.default_rng(seed)
    labels = [f"__label__{chr(97 + i)}{chr(97 + i)}" for i in range(nlabels - 1)] + ["__label__en"]
    label_counts = sorted(rng.integers(1, 50, nlabels).tolist(), reverse=True)  # ties included
    label_counts[-1] = label_counts[-2]
    out = bytearray(struct.pack("<ii", fasttext_lid.MAGIC, version))
    # args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate, then t
    sup = fasttext_lid.MODEL_SUP
    out += struct.pack("<12i", dim, 5, 5, 1, 5, word_ngrams, loss, sup, bucket, minn, maxn, 100)
    out += struct.pack("<d", 1e-4)
    entries = [(w.encode(), 100 - i, 0) for i, w in enumerate(VOCAB)] + [
        (w.encode(), c, 1) for w, c in zip(labels, label_counts, strict=True)
    ]
    out += struct.pack("<3iqq", len(entries), len(VOCAB), nlabels, 12345, pruned)
    for word, count, kind in entries:
        out += word + b"\0" + struct.pack("<qb", count, kind)
    kept = 0
    if pruned > 0:
        src = rng.choice(bucket, pruned, replace=False)
        dst = rng.permutation(pruned)
        for s, d in zip(src.tolist(), dst.tolist(), strict=True):
            out += struct.pack("<ii", s, d)
        kept = pruned
    nrows = len(VOCAB) + (bucket if pruned < 0 else kept)
    out += struct.pack("<?", quantised)
    if quantised:
        nsubq = -(-dim // dsub)
        lastdsub = dim - (nsubq - 1) * dsub
        out += struct.pack("<?qqi", qnorm, nrows, dim, nrows * nsubq)
        out += rng.integers(0, 256, nrows * nsubq, dtype=np.uint8).tobytes()
        out += struct.pack("<4i", dim, nsubq, dsub, lastdsub)
        out += rng.normal(0, 1, dim * 256).astype(np.float32).tobytes()
        if qnorm:
            norm_codes = rng.integers(0, 256, nrows, dtype=np.uint8)
            norms = rng.uniform(0.1, 3, 256).astype(np.float32)
            norms[norm_codes[0]] = 0  # '</s>' has a zero row: see below
            out += norm_codes.tobytes() + struct.pack("<4i", 1, 1, 1, 1) + norms.tobytes()
    else:
        rows = rng.normal(0, 1, (nrows, dim)).astype(np.float32)
        rows[0] = 0  # '</s>' has a zero row, so a blank caption scores every tree branch 0.5: ties
        out += struct.pack("<qq", nrows, dim) + rows.tobytes()
    out += struct.pack("<?", False)
    out += struct.pack("<qq", nlabels, dim) + rng.normal(0, 1.5, (nlabels, dim)).astype(np.float32).tobytes()
    path.write_bytes(bytes(out))
    return str(path)


SMALL_TEXTS = (
    [
        "the dog",
        "le chien",
        "der hund",
        "собака 犬",
        "café x",
        "<s> the </s> dog",
        "__label__aa the",
        "__label__en",
        "",
        " ",
        "dogs and cats",
    ]
    + _random_strings(1500, seed=7)
    + _varied_captions()[:300]
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # dense, every bucket (a real lid.176.bin's layout)
        {"minn": 1, "maxn": 3, "dim": 5},  # 1-char n-grams: the word-edge rule
        {"quantised": True, "dim": 5, "pruned": 120},  # lid.176.ftz's layout; last subquantizer 1 wide
        {"quantised": True, "qnorm": False, "dim": 8, "dsub": 4},
        {"quantised": True, "pruned": 0},  # every n-gram dropped: words only
        {"version": 11},  # old supervised models: no char n-grams
        {"nlabels": 2},
        {"nlabels": 40, "bucket": 3000},
    ],
)
def test_small_models_match_fasttext_predict(tmp_path: Path, kwargs: dict) -> None:
    for seed in range(3):
        path = _write_model(tmp_path / f"m{seed}.bin", seed=seed, **kwargs)
        assert fasttext_lid.load_model(path) is not None
        assert _kernel(path, SMALL_TEXTS) == _oracle(path, SMALL_TEXTS)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"loss": 3}, "loss 3 is not hierarchical softmax"),  # softmax
        ({"loss": 2}, "loss 2 is not hierarchical softmax"),  # negative sampling
        ({"word_ngrams": 2}, "word n-grams"),
    ],
)
def test_unsupported_models_fall_back_to_fasttext_predict(tmp_path: Path, kwargs: dict, why: str) -> None:
    path = _write_model(tmp_path / "m.bin", seed=3, **kwargs)
    with pytest.raises(fasttext_lid.UnsupportedModel, match=why):
        fasttext_lid.parse_model(path)
    assert fasttext_lid.load_model(path) is None
    texts = [*SMALL_TEXTS[:400], None]
    oracle = _oracle(path, [t or "" for t in texts])
    pairs = list(zip(texts, oracle, strict=True))
    assert english_mask(texts, path).tolist() == [bool(t) and o == "__label__en" for t, o in pairs]
    expected = [o.removeprefix("__label__") if t and o else None for t, o in pairs]
    assert top_languages(texts, path) == expected
    assert len(set(expected)) > 2  # the fallback really ran the model


def test_truncated_or_foreign_files_are_unsupported(tmp_path: Path) -> None:
    good = Path(_write_model(tmp_path / "m.bin", seed=4))
    (tmp_path / "short.bin").write_bytes(good.read_bytes()[:-5])
    (tmp_path / "long.bin").write_bytes(good.read_bytes() + b"\0")
    (tmp_path / "foreign.bin").write_bytes(b"not a model at all")
    for name in ("short.bin", "long.bin", "foreign.bin"):
        with pytest.raises(fasttext_lid.UnsupportedModel):
            fasttext_lid.parse_model(tmp_path / name)

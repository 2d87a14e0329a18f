"""uid helpers and DataComp subset files (reference §3.1): formats, sorting, duplicates, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.errors import CurateError
from curate.uids import (
    UID_DTYPE,
    array_to_uids,
    check_subset,
    is_valid_uid,
    normalize_uid,
    pair_to_uid,
    read_subset,
    subset_contains,
    uid_to_pair,
    uids_to_array,
    validate_subset,
    write_subset,
)

MAX = 2**64 - 1
EDGE = [
    "0" * 32,
    "f" * 32,
    "0" * 31 + "1",
    "0000000000000001" + "0000000000000002",
    "ffffffffffffffff" + "0" * 16,
    "0" * 16 + "ffffffffffffffff",
    "008d6058981efa6c89a18ee29d53f2fc",
]


def random_uids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [bytes(row).hex() for row in rng.integers(0, 256, size=(n, 16), dtype=np.uint8)]


def reference_pairs(uids: list[str]) -> list[tuple[int, int]]:
    """DataComp's resharder: divmod(int(uid, 16), 2**64)."""
    return [divmod(int(u, 16), 2**64) for u in uids]


# ---------------------------------------------------------------- one uid


@pytest.mark.parametrize("uid", EDGE)
def test_pair_round_trip_edges(uid: str) -> None:
    hi, lo = uid_to_pair(uid)
    assert (hi, lo) == divmod(int(uid, 16), 2**64)
    assert pair_to_uid(hi, lo) == uid


def test_pair_to_uid_pads_and_bounds() -> None:
    assert pair_to_uid(0, 0) == "0" * 32
    assert pair_to_uid(MAX, MAX) == "f" * 32
    assert pair_to_uid(1, 2) == "0000000000000001" + "0000000000000002"
    with pytest.raises(CurateError, match=r"\[0, 2\*\*64-1\]"):
        pair_to_uid(2**64, 0)
    with pytest.raises(CurateError):
        pair_to_uid(0, -1)


def test_validity_is_lowercase_only() -> None:
    assert is_valid_uid("a" * 32)
    assert not is_valid_uid("A" * 32)
    assert not is_valid_uid("a" * 31)
    assert not is_valid_uid("a" * 33)
    assert not is_valid_uid("g" * 32)
    assert not is_valid_uid("a" * 31 + "\n")
    assert not is_valid_uid(None)
    assert normalize_uid("  " + "AB" * 16 + "\n") == "ab" * 16
    with pytest.raises(CurateError, match="is not 32 hex characters"):
        normalize_uid("xyz")
    with pytest.raises(CurateError, match="not 32 lowercase hex"):
        uid_to_pair("A" * 32)


# ---------------------------------------------------------------- many uids


def test_vectorised_matches_reference() -> None:
    uids = EDGE + random_uids(1000)
    arr = uids_to_array(uids)
    assert arr.dtype == UID_DTYPE
    assert [(int(a), int(b)) for a, b in arr.tolist()] == reference_pairs(uids)
    assert array_to_uids(arr) == uids


def test_accepts_numpy_and_arrow_inputs() -> None:
    uids = random_uids(50)
    expected = uids_to_array(uids)
    assert (uids_to_array(np.array(uids)) == expected).all()
    assert (uids_to_array(np.array(uids, dtype=object)) == expected).all()
    assert (uids_to_array(pa.array(uids)) == expected).all()
    assert (uids_to_array(pa.array(uids, pa.large_string())) == expected).all()
    assert (uids_to_array(pa.array(uids).slice(10, 20)) == expected[10:30]).all()
    assert (uids_to_array(pa.chunked_array([uids[:20], uids[20:]])) == expected).all()
    assert len(uids_to_array([])) == 0
    assert array_to_uids(np.empty(0, UID_DTYPE)) == []


@pytest.mark.parametrize(
    "bad, shown",
    [
        ("A" * 32, "'AAAA"),
        ("a" * 31, "'" + "a" * 31 + "'"),
        ("a" * 33, "'" + "a" * 33 + "'"),
        ("z" * 32, "'zzzz"),
        ("a" * 30 + " a", "'aaa"),  # bytes.fromhex would accept the space
        ("é" * 32, "'éé"),
        (None, "(None)"),
    ],
)
def test_invalid_uid_is_named(bad: object, shown: str) -> None:
    uids = random_uids(3) + [bad] + random_uids(2, seed=1)
    for form in (uids, pa.array(uids)):
        with pytest.raises(CurateError, match=r"uid #3 .* is not 32 lowercase hex characters") as err:
            uids_to_array(form)
        assert shown in str(err.value)


def test_lengths_checked_per_uid_not_in_total() -> None:
    with pytest.raises(CurateError, match="uid #0"):
        uids_to_array(["a" * 31, "a" * 33])
    with pytest.raises(CurateError, match="uid #0"):
        uids_to_array(pa.array(["a" * 31, "a" * 33]))


# ---------------------------------------------------------------- subset files


def test_write_subset_sorts_keeps_duplicates_atomically(tmp_path: Path) -> None:
    uids = random_uids(200) + EDGE
    uids += uids[:5]  # duplicates are meaningful: resharded twice
    unsorted = uids_to_array(uids)
    before = unsorted.copy()
    path = tmp_path / "sub" / "strategy.npy"
    out = write_subset(path, unsorted)
    assert (unsorted == before).all(), "the caller's array is not sorted in place"
    assert os.listdir(path.parent) == ["strategy.npy"], "no temporary file is left behind"
    loaded = np.load(path)
    assert loaded.dtype == UID_DTYPE and len(loaded) == len(uids)
    reference = unsorted.copy()
    reference.sort()  # DataComp's own arr.sort()
    assert (loaded == reference).all() and (out == reference).all()
    assert array_to_uids(loaded) == sorted(uids), "pair order equals string order of lowercase hex"


def test_write_subset_from_strings_and_read_back(tmp_path: Path) -> None:
    uids = random_uids(30)
    write_subset(tmp_path / "s.npy", uids)
    arr = read_subset(tmp_path / "s.npy")
    assert isinstance(arr, np.memmap) or arr.base is not None  # memory-mapped, read-only
    assert not arr.flags.writeable
    assert array_to_uids(arr) == sorted(uids)


def test_write_subset_rewrites_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    write_subset(path, random_uids(10))
    write_subset(path, random_uids(3, seed=9))
    assert len(read_subset(path)) == 3


def test_read_raw_memmap_read_only(tmp_path: Path) -> None:
    arr = np.sort(uids_to_array(random_uids(64)))
    path = tmp_path / "raw.bin"
    arr.tofile(path)
    path.chmod(0o444)  # DataComp opens raw files r+; we need only read access
    loaded = read_subset(path)
    assert (np.asarray(loaded) == arr).all()
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert len(read_subset(empty)) == 0


def test_read_subset_errors(tmp_path: Path) -> None:
    with pytest.raises(CurateError, match=r"missing\.npy: subset file does not exist"):
        read_subset(tmp_path / "missing.npy")
    with pytest.raises(CurateError, match=r"is not a file; expected a subset file"):
        read_subset(tmp_path)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"x" * 17)
    with pytest.raises(
        CurateError, match=r"odd\.bin: not a \.npy file and its size \(17 bytes\) is not a multiple"
    ):
        read_subset(odd)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.arange(4, dtype=np.uint64))
    with pytest.raises(
        CurateError, match=r"wrong\.npy: subset must be a 1-D array of dtype u8,u8.*got dtype uint64"
    ):
        read_subset(wrong)
    two_d = tmp_path / "2d.npy"
    np.save(two_d, np.zeros((2, 2), UID_DTYPE))
    with pytest.raises(CurateError, match=r"shape \(2, 2\)"):
        read_subset(two_d)
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(CurateError, match=r"corrupt\.npy: not a readable \.npy subset file"):
        read_subset(corrupt)
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CurateError, match=r"objects\.npy: not a readable \.npy subset file"):
        read_subset(pickled)


def test_validate_and_check(tmp_path: Path) -> None:
    uids = random_uids(20)
    arr = uids_to_array(uids + uids[:3] + uids[:1])
    report = validate_subset(arr)
    assert (report.count, report.unique, report.duplicates) == (24, 20, 4)
    assert report.is_sorted is False
    assert validate_subset(np.sort(arr)).is_sorted is True
    assert validate_subset(np.empty(0, UID_DTYPE)) == validate_subset([])
    # sorted on f0 only is not sorted
    same_hi = uids_to_array(["0" * 16 + "0" * 15 + "2", "0" * 16 + "0" * 15 + "1"])
    assert not validate_subset(same_hi).is_sorted

    good = tmp_path / "good.npy"
    write_subset(good, arr)
    assert check_subset(good) == []  # duplicates are fine
    bad = tmp_path / "unsorted.npy"
    np.save(bad, arr)  # written without sorting
    assert check_subset(bad) == [
        f"{bad}: uids are not sorted; DataComp's resharder looks them up with searchsorted and would "
        "silently miss samples. Rewrite it with curate.uids.write_subset (which sorts)"
    ]
    empty = tmp_path / "empty.npy"
    write_subset(empty, [])
    assert check_subset(empty) == [f"{empty}: the subset is empty (0 uids); nothing would be resharded"]
    assert check_subset(tmp_path / "nope.npy") == [f"{tmp_path / 'nope.npy'}: subset file does not exist"]


def test_subset_contains_counts_multiplicity() -> None:
    uids = random_uids(100)
    chosen = uids[:10] + uids[:3] + uids[:1]  # uid 0 three times, 1-2 twice, 3-9 once
    subset = np.sort(uids_to_array(chosen))
    counts = subset_contains(subset, uids)
    assert counts[:1].tolist() == [3]
    assert counts[1:3].tolist() == [2, 2]
    assert counts[3:10].tolist() == [1] * 7
    assert counts[10:].sum() == 0
    assert subset_contains(subset, uids[:1]).tolist() == [3]
    assert len(subset_contains(subset, [])) == 0


def test_other_uid_array_forms() -> None:
    plain = np.array([[1, 2], [0, MAX]], dtype=np.uint64)
    assert array_to_uids(plain) == [pair_to_uid(1, 2), pair_to_uid(0, MAX)]
    named = np.zeros(1, dtype=[("hi", ">u8"), ("lo", "<u8")])
    named["hi"], named["lo"] = 5, 6
    assert array_to_uids(named) == [pair_to_uid(5, 6)]
    with pytest.raises(CurateError, match="expected uids as a u8,u8 array"):
        array_to_uids(np.zeros(3, dtype=np.float32))


def test_sort_uids_equals_numpys_structured_sort_with_ties_and_duplicates() -> None:
    from curate.uids import UID_DTYPE, sort_uids

    rng = np.random.default_rng(0)
    arr = np.empty(50_000, UID_DTYPE)
    arr["f0"] = rng.integers(0, 50, len(arr), dtype=np.uint64)  # runs of equal f0 everywhere
    arr["f1"] = rng.integers(0, 2**64 - 1, len(arr), dtype=np.uint64, endpoint=True)
    arr[:100] = arr[100:200]  # whole duplicates
    want = arr.copy()
    want.sort()
    assert np.array_equal(sort_uids(arr), want)
    unique = arr.copy()
    unique["f0"] = rng.permutation(len(arr)).astype(np.uint64)  # no ties: the fast path alone
    want = unique.copy()
    want.sort()
    assert np.array_equal(sort_uids(unique), want) and np.array_equal(sort_uids(arr[:0]), arr[:0])

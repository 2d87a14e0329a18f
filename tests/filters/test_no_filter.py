"""no_filter (reference §2.3): every row, whatever its caption or size; duplicates kept."""

from __future__ import annotations

from pathlib import Path

from curate.filtering.standalone import filter_metadata
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import rows, uid, write_part


def test_keeps_every_row_sorted(tmp_path: Path) -> None:
    first = rows(3, text=[None, "", "x"], original_width=[None, 1, 5000])
    first["uid"] = [uid(5), uid(1), uid(5)]  # a uid listed twice is kept twice
    second = rows(2)
    second["uid"] = [uid(3), uid(0)]
    write_part(tmp_path / "metadata", "b", first)
    write_part(tmp_path / "metadata", "a", second)
    summary = filter_metadata(str(tmp_path / "metadata"), "all", "no_filter", tmp_path / "s.npy", workers=1)
    assert array_to_uids(read_subset(tmp_path / "s.npy")) == [uid(0), uid(1), uid(3), uid(5), uid(5)]
    assert summary["rows"] == summary["kept"] == summary["count"] == 5
    assert summary["funnel"] == [
        {"step": "no_filter: no_filter()", "removed_alone": 0, "removed_in_sequence": 0, "left": 5}
    ]

"""The openclipart demo pool on real Debian clip art: a small copy for most tests, the full root once."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest

from curate.config import OpenclipartPoolConfig
from curate.errors import CurateError, PreflightError
from curate.pools import POOL_COLUMNS, POOL_SCHEMA, make_pool
from curate.pools.openclipart import (
    TABLE_SCHEMA,
    OpenclipartPool,
    is_held_out,
    make_caption,
    png_size,
    scan_pngs,
    svg_metadata,
)

ROOT = Path("/usr/share/openclipart")
pytestmark = pytest.mark.skipif(
    not (ROOT / "png").is_dir() or not (ROOT / "svg").is_dir(),
    reason="needs Debian's clip art: apt-get install openclipart-png openclipart-svg",
)

FROGS = "animals/2_dead_frogs_lumen_desig_01"
FROGS_LINK = "animals/amphibian/2_dead_frogs_lumen_desig_01"  # symlink to ../2_dead_frogs_lumen_desig_01.png
BABOON = "animals/mammals/contour_baboon"  # SVG without a default namespace
VIEWMAG = "computer/icons/flat-theme/action/viewmag+"  # '+' in the name; junk "Flat Icon Collection" title
STOP = "signs_and_symbols/stop_sign_miguel_s_nchez_"  # 20990 x 29700: never decoded
NO_SVG = "animals/bison_leif_lodahl_01"  # its SVG is removed from the copy
BROKEN_SVG = "animals/bat_orlando_karam_"  # its SVG is cut in the middle of the metadata
NOT_PNG = "animals/crawfish1_ganson"  # its PNG is replaced by garbage
OTHERS = [
    "animals/architetto_francesco_ro_01",
    "animals/armadillo_architetto_fra_01",
    "animals/az-lizard_benji_park_01",
    "animals/baby-tux_alex_kuehne_01",
    "animals/cani_e_gatti_cat_and_do_01",
    "animals/crawfish1_bw_ganson",
    "animals/crawfish2_bw_ganson",
    "animals/crawfish2_ganson",
    "food/spaghetti_bw",
    "tools/magnifying_glass_olivier_01",
    "recreation/games/cards/bordered/bordered_h_k",
]
FILES = [FROGS, BABOON, VIEWMAG, STOP, NO_SVG, BROKEN_SVG, NOT_PNG, *OTHERS]


def copy_root(dest: Path) -> Path:
    """A small openclipart root with the same folder structure, one symlink and a few damaged files."""
    for rel in [*FILES, FROGS_LINK]:
        for kind in ("png", "svg"):
            src = ROOT / kind / f"{rel}.{kind}"
            dst = dest / kind / f"{rel}.{kind}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if kind == "png" and rel == FROGS_LINK:
                os.symlink(os.readlink(src), dst)
            else:
                shutil.copyfile(src, dst)
    (dest / "svg" / f"{NO_SVG}.svg").unlink()
    broken = dest / "svg" / f"{BROKEN_SVG}.svg"
    text = broken.read_bytes()
    broken.write_bytes(text[: text.index(b"<dc:subject>") + 30])
    (dest / "png" / f"{NOT_PNG}.png").write_bytes(b"this is not an image at all")
    return dest


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_root(tmp_path_factory.mktemp("openclipart"))


def pool_of(root: Path | str, **kw: object) -> OpenclipartPool:
    pool = make_pool(OpenclipartPoolConfig(source="openclipart", root=str(root), **kw))
    assert isinstance(pool, OpenclipartPool)
    return pool


def rows_by_rel(table: pa.Table) -> dict[str, dict]:
    return {row["relpath"]: row for row in table.to_pylist()}


def test_build_and_read(small_root: Path, tmp_path: Path) -> None:
    pool = pool_of(small_root)
    assert pool.check() == []
    pool.prepare(tmp_path)
    (part,) = pool.parts()
    assert (part.stem, part.num_rows, part.path) == (
        "openclipart",
        len(FILES) + 1,
        str(tmp_path / "openclipart.parquet"),
    )
    table = pool.read(part, 0, part.num_rows)
    assert table.schema == TABLE_SCHEMA
    assert table.select(POOL_COLUMNS).schema == POOL_SCHEMA
    rels = table.column("relpath").to_pylist()
    assert rels == sorted(f"{r}.png" for r in [*FILES, FROGS_LINK])
    rows = rows_by_rel(table)

    frogs = rows[f"{FROGS}.png"]
    assert frogs["uid"] == hashlib.sha256(f"openclipart:{FROGS}".encode()).hexdigest()[:32]
    assert frogs["url"] == f"file://{small_root}/png/{FROGS}.png"
    assert frogs["category"] == "animals"
    assert frogs["title"] == "2 dead frogs"
    assert frogs["description"] == "2 dead frogs... nothing more..."
    assert frogs["keywords"][:3] == ["kwaakwaa", "squeleton", "froggies"] and len(frogs["keywords"]) == 23
    assert frogs["text"].startswith(
        "2 dead frogs. 2 dead frogs... nothing more... kwaakwaa, squeleton, froggies, "
    )
    assert frogs["svg_found"] is True
    assert (frogs["original_width"], frogs["original_height"]) == png_size(str(ROOT / "png" / f"{FROGS}.png"))

    link = rows[f"{FROGS_LINK}.png"]  # a symlinked path is its own candidate; its URL is not resolved
    assert link["url"] == f"file://{small_root}/png/{FROGS_LINK}.png"
    assert link["uid"] != frogs["uid"]
    assert (link["original_width"], link["original_height"]) == (
        frogs["original_width"],
        frogs["original_height"],
    )

    stop = rows[f"{STOP}.png"]
    assert (stop["original_width"], stop["original_height"]) == (20990, 29700)
    assert stop["text"] == "stop sign. stop traffic sign. traffic, road, sign"

    viewmag = rows[f"{VIEWMAG}.png"]
    assert viewmag["url"].endswith("/viewmag%2B.png")  # percent-encoded; maps back to the real path
    assert (
        urllib.request.url2pathname(urllib.parse.urlparse(viewmag["url"]).path)
        == f"{small_root}/png/{VIEWMAG}.png"
    )
    assert viewmag["title"].startswith("Part of the Flat Icon Collection (")  # noise is kept
    assert viewmag["category"] == "computer"

    assert rows[f"{BABOON}.png"]["title"] == "Clipart by Nicu Buculei - contour_chipmunk"
    assert rows[f"{BABOON}.png"]["keywords"] == ["mammal", "animal"]  # empty keywords dropped

    missing = rows[f"{NO_SVG}.png"]
    assert (missing["svg_found"], missing["text"], missing["title"], missing["keywords"]) == (
        False,
        "",
        "",
        [],
    )
    broken = rows[f"{BROKEN_SVG}.png"]
    assert (broken["svg_found"], broken["text"], broken["keywords"]) == (True, "", [])
    garbage = rows[f"{NOT_PNG}.png"]
    assert (garbage["original_width"], garbage["original_height"]) == (None, None)
    assert garbage["title"]  # still a row, with its caption

    assert pool.read(part, 3, 7).equals(table.slice(3, 4))


def test_prepare_once_and_rebuild_on_new_settings(small_root: Path, tmp_path: Path) -> None:
    pool_of(small_root).prepare(tmp_path)
    table = tmp_path / "openclipart.parquet"
    first = table.stat().st_mtime_ns
    time.sleep(0.01)
    pool_of(small_root).prepare(tmp_path)
    assert table.stat().st_mtime_ns == first, "same root and caption mode: not rebuilt"
    pool = pool_of(small_root, caption="title")
    pool.prepare(tmp_path)
    assert table.stat().st_mtime_ns != first
    rows = rows_by_rel(pool.read(pool.parts()[0], 0, 100))
    assert rows[f"{FROGS}.png"]["text"] == "2 dead frogs"
    assert sorted(os.listdir(tmp_path)) == ["openclipart.json", "openclipart.parquet"]  # no temp files


def test_caption_modes() -> None:
    kws = ["fruit", "food", "apple"]
    assert (
        make_caption("Red apple", "A shiny red apple.", kws, "full")
        == "Red apple. A shiny red apple. fruit, food, apple"
    )
    assert (
        make_caption("Red apple", "A shiny red apple.", kws, "title_description")
        == "Red apple. A shiny red apple."
    )
    assert make_caption("Red apple", "A shiny red apple.", kws, "title") == "Red apple"
    assert make_caption("Apple!", "Apple!", kws, "title_description") == "Apple!"  # same: said once
    assert make_caption("", "Only a description", [], "full") == "Only a description"
    assert make_caption("", "", ["a", "b"], "full") == "a, b"
    assert make_caption("", "", [], "full") == ""


def test_svg_reader_edge_cases(tmp_path: Path) -> None:
    svg = tmp_path / "a.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:cc="http://creativecommons.org/ns#" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        "<metadata><rdf:RDF><cc:Work><dc:title>  Two\n  lines </dc:title>"
        "<dc:creator><cc:Agent><dc:title>Not the title</dc:title></cc:Agent></dc:creator>"
        "<dc:subject><rdf:Bag><rdf:li>x</rdf:li><rdf:li> x </rdf:li><rdf:li/></rdf:Bag></dc:subject>"
        "</cc:Work></rdf:RDF></metadata><path d='" + "M 0 0 " * 400_000 + "'/>  <unclosed>"
    )
    meta = svg_metadata(str(svg))
    assert (meta.title, meta.description, meta.keywords, meta.found) == ("Two lines", "", ["x"], True)
    (tmp_path / "junk.svg").write_bytes(b"\x00\xff not xml")
    assert svg_metadata(str(tmp_path / "junk.svg")).title == ""
    (tmp_path / "nometa.svg").write_text("<svg><g/></svg>")
    assert svg_metadata(str(tmp_path / "nometa.svg")).found is True


def test_parts_before_prepare_and_served_dir(small_root: Path) -> None:
    with pytest.raises(CurateError, match=r"call prepare\(workdir\) first"):
        pool_of(small_root).parts()
    assert pool_of(small_root).served_dir() == (f"file://{small_root}/", small_root)
    assert pool_of(small_root, serve="file").served_dir() is None


def test_max_samples(small_root: Path, tmp_path: Path) -> None:
    pool = pool_of(small_root, max_samples=5)
    pool.prepare(tmp_path)
    assert [p.num_rows for p in pool.parts()] == [5]


def test_check_messages(tmp_path: Path) -> None:
    assert pool_of(tmp_path / "nope").check() == [
        f"pool.root: directory '{tmp_path}/nope' does not exist. Install the clip art with `apt-get install "
        "openclipart-png openclipart-svg (Debian/Ubuntu)`, or set pool.root to a directory holding png/ "
        "and svg/"
    ]
    assert pool_of(tmp_path).check() == [
        f"pool.root: '{tmp_path}' has no png/ folder (images). Install it with `apt-get install "
        "openclipart-png openclipart-svg (Debian/Ubuntu)`",
        f"pool.root: '{tmp_path}' has no svg/ folder, so every caption would be empty. Install it with "
        "`apt-get install openclipart-png openclipart-svg (Debian/Ubuntu)`",
    ]
    with pytest.raises(PreflightError, match="pool: the openclipart pool is not usable"):
        pool_of(tmp_path / "nope").prepare(tmp_path / "work")
    (tmp_path / "png").mkdir()
    (tmp_path / "svg").mkdir()
    with pytest.raises(PreflightError, match=r"pool.root: no .png files under '.*/png'"):
        pool_of(tmp_path).prepare(tmp_path / "work")


def test_full_debian_root(tmp_path: Path) -> None:
    """The real 8,121 paths: built in seconds, the same uids every time."""
    start = time.perf_counter()
    pool = pool_of(ROOT, holdout=False)
    pool.prepare(tmp_path / "a")
    elapsed = time.perf_counter() - start
    (part,) = pool.parts()
    assert part.num_rows == 8121
    table = pool.read(part, 0, part.num_rows)
    assert len(set(table.column("uid").to_pylist())) == 8121
    assert len(set(table.column("url").to_pylist())) == 8121
    assert all(table.column("svg_found").to_pylist())
    assert sum(bool(t) for t in table.column("title").to_pylist()) > 8000
    assert table.column("original_width").null_count == 0
    widths, heights = table.column("original_width").to_pylist(), table.column("original_height").to_pylist()
    assert sum(max(w, h) > 4096 for w, h in zip(widths, heights, strict=True)) == 19
    assert elapsed < 30, f"building the openclipart table took {elapsed:.1f} s"
    again = pool_of(ROOT, holdout=False)
    again.prepare(tmp_path / "b")
    assert again.read(again.parts()[0], 0, 8121).equals(table)
    held = [r for r in table.column("relpath").to_pylist() if is_held_out(str(ROOT / "png"), r)]
    assert 300 < len(held) < 450, "about 5% of the paths (372) form the openclipart eval task"
    # the default pool (holdout on) against the eval set: tests/eval/test_generate.py


def test_holdout_leaves_out_a_file_and_its_symlinks(tmp_path: Path) -> None:
    """A held-out clip art and a symlink to it (whose own path hashes either way) both leave the pool."""
    png = str(ROOT / "png")
    held = next(r for r in scan_pngs(png) if is_held_out(png, r) and not os.path.islink(os.path.join(png, r)))
    kept = next(r for r in scan_pngs(png) if not is_held_out(png, r) and r.startswith("animals/"))
    root = tmp_path / "root"
    for rel in (held, kept):
        for kind in ("png", "svg"):
            dst = root / kind / (rel[: -len(".png")] + f".{kind}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / kind / (rel[: -len(".png")] + f".{kind}"), dst)
    link = next(f"zz/link{i}.png" for i in range(1000) if not is_held_out(png, f"zz/link{i}.png"))
    (root / "png" / "zz").mkdir()
    os.symlink(os.path.relpath(root / "png" / held, root / "png" / "zz"), root / "png" / link)
    pool = pool_of(root)
    pool.prepare(tmp_path / "w")
    assert pool.read(pool.parts()[0], 0, 10).column("relpath").to_pylist() == [kept]
    everything = pool_of(root, holdout=False)
    everything.prepare(tmp_path / "w")  # the setting changed: the table is rebuilt
    assert everything.read(everything.parts()[0], 0, 10).column("relpath").to_pylist() == sorted(
        [held, kept, link]
    )

"""Debian's openclipart-png + openclipart-svg as a small, real, offline image-text pool (the demo pool).

Each PNG path under `<root>/png` is one candidate; a symlinked path is its own candidate, like the same
image posted twice on the web. The caption comes from the RDF metadata of the SVG at the same relative
path (dc:title, dc:description, dc:subject keywords). These are noisy, alt-text-like captions
("Part of the Flat Icon Collection (Wed Aug 25 ...)") and are kept as they are: noise is the point.
Image sizes come from the PNG header only; the largest file is 20990x29700 and is never decoded here.

`prepare` builds `<workdir>/openclipart.parquet` once (about 2 s for the 8,121 Debian files).

Holdout: about 5% of the images (chosen by a hash of the file's path, symlinks resolved, so every path to
one file lands on the same side) are the `openclipart` evaluation task (curate/eval/generate.py) and are
left out of the pool unless `holdout: false`. `is_held_out` is the one place that decides it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import OpenclipartPoolConfig
from curate.errors import CurateError, PreflightError
from curate.pools.base import POOL_SCHEMA, Pool, PoolPart, limit_parts

TABLE_NAME = "openclipart.parquet"
SETTINGS_NAME = "openclipart.json"
FORMAT_VERSION = 1  # bump when the table's content or layout changes, so old tables are rebuilt
STEM = "openclipart"

SVG_HEAD_CAP = 1 << 20  # metadata is in the first 6 KB of every Debian SVG; never read past 1 MiB
SVG_CHUNK = 4096  # feed the parser in small chunks and stop right after the metadata

DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_METADATA_END = re.compile(rb"</(?:[\w.-]+:)?metadata\s*>")

TABLE_SCHEMA = pa.schema(
    [
        *POOL_SCHEMA,
        ("category", pa.string()),
        ("relpath", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("keywords", pa.list_(pa.string())),
        ("svg_found", pa.bool_()),
    ]
)


# ---------------------------------------------------------------- per-file readers


@dataclass
class SvgMeta:
    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    found: bool = False  # the SVG file exists and could be opened


def clean(text: str | None) -> str:
    """Collapse whitespace (newlines included) to single spaces and trim."""
    return " ".join(text.split()) if text else ""


def svg_metadata(path: str) -> SvgMeta:
    """dc:title, dc:description and dc:subject keywords of the cc:Work in an SVG's RDF metadata.

    Reads in small chunks and feeds the parser only up to </metadata>, at most SVG_HEAD_CAP bytes, so
    huge SVGs cost nothing. Only the Work's own dc:title counts (the creator and publisher agents have
    one too). A malformed or metadata-less file gives empty fields. xml.etree never fetches external
    entities, and the bundled expat refuses entity-expansion bombs."""
    meta = SvgMeta()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError:
        return meta
    meta.found = True
    parser = ET.XMLPullParser(events=("end",))
    element, tail, read = None, b"", 0
    with f:
        try:
            while element is None and read < SVG_HEAD_CAP:
                chunk = f.read(SVG_CHUNK)
                if not chunk:
                    break
                read += len(chunk)
                end = _METADATA_END.search(tail + chunk)
                parser.feed(chunk if end is None else chunk[: max(0, end.end() - len(tail))])
                tail = chunk[-64:]
                element = next((el for _, el in parser.read_events() if _is_metadata(el.tag)), None)
                if end is not None:
                    break
        except (ET.ParseError, OSError):
            return meta
    works = element.iter() if element is not None else ()
    work = next((el for el in works if el.tag.endswith("}Work")), None)
    if work is None:
        return meta
    meta.title = _text(work.find(DC + "title"))
    meta.description = _text(work.find(DC + "description"))
    subject = work.find(DC + "subject")
    if subject is not None:
        items = [_text(li) for li in subject.iter(RDF + "li")] or [_text(subject)]
        meta.keywords = list(dict.fromkeys(k for k in items if k))  # drop empty and repeated keywords
    return meta


def _is_metadata(tag: str) -> bool:
    return tag == "metadata" or tag.endswith("}metadata")  # some SVGs have no default namespace


def _text(el: ET.Element | None) -> str:
    return clean("".join(el.itertext())) if el is not None else ""


def png_size(path: str) -> tuple[int | None, int | None]:
    """(width, height) from the PNG IHDR chunk, without decoding; other formats via PIL's header parser.
    (None, None) when neither can read it: the row stays, the download stage counts the failure."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None, None
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.size
    except Exception:  # PIL raises many types (incl. DecompressionBombError) for unreadable files
        return None, None


def make_caption(title: str, description: str, keywords: list[str], mode: str) -> str:
    """`title`, `title_description` (title + ". " + description when present and different) or `full`
    (also the keywords, comma-separated), like an alt-text that mixes them."""
    pieces = [title]
    if mode in ("title_description", "full") and description and description != title:
        pieces.append(description)
    if mode == "full" and keywords:
        pieces.append(", ".join(keywords))
    pieces = [p for p in pieces if p]
    text = ""
    for p in pieces:
        sep = " " if not text or text[-1] in ".!?" else ". "
        text = p if not text else text + sep + p
    return clean(text)


def openclipart_uid(rel_png: str) -> str:
    """First 32 hex of sha256("openclipart:" + path relative to png/, without .png): stable everywhere."""
    return hashlib.sha256(f"openclipart:{rel_png.removesuffix('.png')}".encode()).hexdigest()[:32]


# ---------------------------------------------------------------- evaluation holdout

HOLDOUT_FRACTION = 0.05
HOLDOUT_SALT = "curate-openclipart-eval-holdout-v1"  # changing it moves images between pool and eval set


def holdout_key(png_root: str, rel: str) -> str:
    """The path a holdout decision is made on: `rel` with symlinks resolved inside png_root, so a file and
    every symlink to it are on the same side (Debian's 1,221 symlinked paths would otherwise put one image
    in both the pool and the eval set). A link that leaves the root or dangles keeps its listed path.
    Only the file itself is checked for being a link: scan_pngs never enters linked directories."""
    path = os.path.join(png_root, *rel.split("/"))
    if not os.path.islink(path):
        return rel
    root = os.path.realpath(png_root)
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep) or not os.path.isfile(real):
        return rel
    return os.path.relpath(real, root).replace(os.sep, "/")


def is_held_out(png_root: str, rel: str) -> bool:
    """Whether the PNG at `rel` (relative to png_root) belongs to the evaluation holdout, not the pool.
    A salted sha256 of the resolved path: stable across machines and runs, about HOLDOUT_FRACTION of files."""
    digest = hashlib.sha256(f"{HOLDOUT_SALT}:{holdout_key(png_root, rel)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < HOLDOUT_FRACTION * 2**64


# ---------------------------------------------------------------- table build


def scan_pngs(png_root: str) -> list[str]:
    """Relative POSIX paths of every *.png under png_root (symlinked files included), sorted.
    Symlinked directories are not followed (Debian's package has none)."""
    rels = []
    for dirpath, _dirs, files in os.walk(png_root):
        for name in files:
            if name.endswith(".png"):
                rels.append(os.path.relpath(os.path.join(dirpath, name), png_root).replace(os.sep, "/"))
    return sorted(rels)


def _row(root: str, rel: str, caption: str) -> tuple:
    png = os.path.join(root, "png", *rel.split("/"))
    width, height = png_size(png)
    svg = svg_metadata(os.path.join(root, "svg", *rel[: -len(".png")].split("/")) + ".svg")
    text = make_caption(svg.title, svg.description, svg.keywords, caption)
    category = rel.split("/")[0] if "/" in rel else ""
    url = Path(png).as_uri()  # percent-encoded file:// URL of the path as listed (symlinks not resolved)
    return (openclipart_uid(rel), url, text, width, height, category, rel,
            svg.title, svg.description, svg.keywords, svg.found)  # fmt: skip


def build_table(root: str, caption: str, holdout: bool = False) -> pa.Table:
    """The pool table for an openclipart root (absolute), one row per PNG path in sorted order; with
    `holdout`, the paths `is_held_out` reserves for evaluation are left out.

    Sequential on purpose: ~2 s for the 8,121 Debian files on 2 cores. Threads were slower (the XML
    parsing holds the GIL); a fork pool halves it but forking a Ray driver is unsafe, and spawn-started
    workers cost more in imports than they save."""
    png_root = os.path.join(root, "png")
    rels = [r for r in scan_pngs(png_root) if not (holdout and is_held_out(png_root, r))]
    rows = [_row(root, rel, caption) for rel in rels]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in TABLE_SCHEMA]
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, TABLE_SCHEMA, strict=True)],
        schema=TABLE_SCHEMA,
    )


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through a temporary name in the same directory, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the pool


class OpenclipartPool(Pool):
    """One part ("openclipart"), read from the table that `prepare` builds."""

    def __init__(self, cfg: OpenclipartPoolConfig) -> None:
        self.cfg = cfg
        self.root = os.path.abspath(os.path.expanduser(cfg.root))  # absolute, symlinks kept
        self.table_path: Path | None = None

    def _settings(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "root": self.root,
            "caption": self.cfg.caption,
            "holdout": self.cfg.holdout,
        }

    def check(self) -> list[str]:
        install = "apt-get install openclipart-png openclipart-svg (Debian/Ubuntu)"
        root = self.cfg.root
        if not os.path.isdir(self.root):
            return [
                f"pool.root: directory '{root}' does not exist. Install the clip art with `{install}`, "
                "or set pool.root to a directory holding png/ and svg/"
            ]
        problems = []
        if not os.path.isdir(os.path.join(self.root, "png")):
            problems.append(f"pool.root: '{root}' has no png/ folder (images). Install it with `{install}`")
        if not os.path.isdir(os.path.join(self.root, "svg")):
            problems.append(
                f"pool.root: '{root}' has no svg/ folder, so every caption would be empty. "
                f"Install it with `{install}`"
            )
        if self.table_path is not None and not self.table_path.is_file():
            problems.append(f"{self.table_path}: the openclipart table is missing; run prepare again")
        return problems

    def prepare(self, workdir: Path) -> None:
        """Build <workdir>/openclipart.parquet unless it was built for the same root and caption mode."""
        problems = self.check()
        if problems:
            raise PreflightError("pool: the openclipart pool is not usable", problems)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        table_path, settings_path = workdir / TABLE_NAME, workdir / SETTINGS_NAME
        settings = self._settings()
        try:
            built = json.loads(settings_path.read_text())
        except (OSError, ValueError):
            built = None
        if not (table_path.is_file() and isinstance(built, dict) and built.get("settings") == settings):
            table = build_table(self.root, self.cfg.caption, holdout=self.cfg.holdout)
            if table.num_rows == 0:
                raise PreflightError(f"pool.root: no .png files under '{os.path.join(self.cfg.root, 'png')}'")
            _atomic_write(table_path, lambda tmp: pq.write_table(table, tmp))
            record = json.dumps({"settings": settings, "rows": table.num_rows}, indent=1)
            _atomic_write(settings_path, lambda tmp: Path(tmp).write_text(record))
        self.table_path = table_path

    def parts(self) -> list[PoolPart]:
        if self.table_path is None:
            raise CurateError("openclipart pool: call prepare(workdir) first; it builds the pool table")
        try:
            num_rows = pq.ParquetFile(self.table_path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise CurateError(f"{self.table_path}: cannot read the openclipart table ({exc})") from None
        return limit_parts([PoolPart(STEM, str(self.table_path), num_rows)], self.cfg.max_samples)

    def read(self, part: PoolPart, start: int, stop: int) -> pa.Table:
        try:
            table = pq.read_table(part.path, schema=TABLE_SCHEMA)
        except (OSError, pa.ArrowException) as exc:
            raise CurateError(f"{part.path}: cannot read the openclipart table ({exc})") from None
        return table.slice(start, max(0, stop - start))

    def served_dir(self) -> tuple[str, Path] | None:
        if self.cfg.serve != "http":
            return None
        return Path(self.root).as_uri().rstrip("/") + "/", Path(self.root)

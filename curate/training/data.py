"""`--train-data` from a data directory, built as DataComp's `train.py` builds it (reference §4.4).

- `::` separates several entries; `--data-weights` uses the same syntax and is repeated for every
  pattern an entry produces.
- An entry ending in `.tar` (a file or a brace pattern) is used as it is; `s3://` ones become
  `pipe:aws s3 cp <url> -`, as in DataComp.
- A folder holding a resharder `meta.json` becomes `{<fmt(0)>..<fmt(count-1)>}.tar` from its
  `output_shard_count` and `output_shard_format`. DataComp applies this to sub-folders only and groups
  a top folder's own tars by prefix; for a complete resharded folder both give the same pattern, and
  meta.json also covers a folder whose last shards were written but not yet listed.
- In other folders, `*.tar` files are grouped by prefix (the name minus its trailing digits): each group
  becomes `<prefix>{0..0<max>}.tar` with the zero padding of the group's first name (sorted, where
  DataComp takes whichever file the directory listing gives first). Gaps are not detected, as in
  DataComp. Sub-folders are recursed into.

Where DataComp would crash or emit an unusable pattern, we raise a CurateError instead: a missing
path, a folder without any shard, a `.tar` name without trailing digits in a group (DataComp:
AttributeError), a weight count that does not match the entry count. Hidden files (a writer's temps)
are skipped. Remote folders are not listed (DataComp lists them with cloudpathlib): name their shards
with a brace pattern instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from curate.errors import CurateError

_TRAILING_DIGITS = re.compile(r"\d+$")


def _prepare(name: str) -> str:
    return f"pipe:aws s3 cp {name} -" if name.startswith("s3://") else name


def _is_url(text: str) -> bool:
    return re.match(r"^\w+://", text) is not None


def _meta_pattern(folder: Path) -> str:
    meta_file = folder / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
        count = int(meta["output_shard_count"])
        fmt = str(meta["output_shard_format"])
        first, last = fmt.format(0).removesuffix(".tar"), fmt.format(count - 1).removesuffix(".tar")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CurateError(
            f"{meta_file}: not a resharder meta.json (needs output_shard_count and output_shard_format, "
            f"e.g. '{{:08d}}.tar'): {type(exc).__name__}: {exc}"
        ) from None
    if count < 1:
        raise CurateError(f"{meta_file}: output_shard_count is {count}; the folder holds no shard")
    return str(folder / f"{{{first}..{last}}}.tar")


def _folder_patterns(folder: Path) -> list[str]:
    """Patterns for one folder: its tar groups and its sub-folders (DataComp's get_input_shards)."""
    groups: dict[str, list[str]] = {}
    patterns: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.suffix == ".tar" and entry.is_file():
            stem = str(entry.with_suffix(""))
            digits = _TRAILING_DIGITS.search(entry.stem)
            if digits is None:
                raise CurateError(
                    f"{entry}: shard names must end in digits (00000000.tar, part-0001.tar) so that "
                    "they can be grouped into a brace pattern; give this file on its own instead"
                )
            cut = len(stem) - len(digits.group())
            groups.setdefault(stem[:cut], []).append(stem[cut:])
        elif entry.is_dir():
            if (entry / "meta.json").exists():
                patterns.append(_prepare(_meta_pattern(entry)))
            else:
                patterns.extend(_folder_patterns(entry))
    for prefix in sorted(groups):
        numbers = groups[prefix]
        width, last = len(numbers[0]), max(int(n) for n in numbers)
        patterns.append(_prepare(f"{prefix}{{{0:0{width}d}..{last:0{width}d}}}.tar"))
    return patterns


def _entry_patterns(entry: str) -> list[str]:
    if entry.endswith(".tar"):
        if not _is_url(entry) and "{" not in entry and not Path(entry).is_file():
            raise CurateError(f"training data: no such shard file '{entry}'")
        return [_prepare(entry)]
    if _is_url(entry):
        raise CurateError(
            f"training data: '{entry}' is a remote folder; curate does not list remote folders, give its "
            "shards as a brace pattern instead (e.g. s3://bucket/data/{00000000..00000099}.tar)"
        )
    folder = Path(entry)
    if not folder.exists():
        raise CurateError(f"training data: no such directory '{entry}'")
    if not folder.is_dir():
        raise CurateError(f"training data: '{entry}' is neither a directory nor a .tar shard")
    if (folder / "meta.json").exists():
        return [_meta_pattern(folder)]
    patterns = _folder_patterns(folder)
    if not patterns:
        raise CurateError(f"training data: '{entry}' holds no .tar shards (nor sub-folders with any)")
    return patterns


def train_data_pattern(data_dir: str, weights: str | None = None) -> tuple[str, str | None]:
    """(`--train-data` value, `--train-data-upsampling-factors` value or None) for a data directory."""
    entries = [e for e in str(data_dir).split("::")]
    if any(not e for e in entries):
        raise CurateError(f"training data: empty entry in '{data_dir}' (entries are separated by '::')")
    entry_weights: list[str | None] = [None] * len(entries)
    if weights is not None:
        entry_weights = list(weights.split("::"))
        if len(entry_weights) != len(entries):
            raise CurateError(
                f"data weights: {len(entry_weights)} weight(s) for {len(entries)} data entr"
                f"{'y' if len(entries) == 1 else 'ies'} ('{weights}' vs '{data_dir}')"
            )
        for w in entry_weights:
            try:
                float(w or "")
            except ValueError:
                raise CurateError(f"data weights: '{w}' is not a number (in '{weights}')") from None
    patterns: list[str] = []
    out_weights: list[str] = []
    for entry, weight in zip(entries, entry_weights, strict=True):
        found = _entry_patterns(entry)
        patterns += found
        out_weights += [weight or ""] * len(found)
    return "::".join(patterns), ("::".join(out_weights) if weights is not None else None)

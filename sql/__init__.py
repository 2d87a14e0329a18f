"""Named DuckDB queries for `curate sql` (the .sql files beside this one), shipped as curate.sql_queries."""

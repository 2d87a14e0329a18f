-- Funnel per strategy: rows, downloaded, kept, and how many rows each filter removes on its own.
-- (The manifest and subsets/<strategy>.json also hold the in-sequence funnel, in the strategy's order.)
WITH totals AS (
    SELECT strategy, count(*) AS rows, count_if(downloaded) AS downloaded, count_if(keep) AS kept
    FROM decisions GROUP BY strategy
),
steps AS (
    SELECT strategy, regexp_replace(step, '\.keep$', '') AS step, count_if(NOT step_keep) AS removed_alone
    FROM (UNPIVOT (SELECT strategy, COLUMNS('\.keep$') FROM decisions)
          ON COLUMNS('\.keep$') INTO NAME step VALUE step_keep)
    GROUP BY ALL
)
SELECT t.strategy, s.step, t.rows, t.downloaded, s.removed_alone,
       round(100.0 * s.removed_alone / t.rows, 2) AS removed_alone_pct, t.kept,
       round(100.0 * t.kept / t.rows, 2) AS kept_pct
FROM totals t JOIN steps s USING (strategy)
ORDER BY t.strategy, s.step;

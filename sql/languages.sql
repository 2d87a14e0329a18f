-- Caption languages (fastText lid.176, as the DataComp baselines use it), estimated on up to 100,000
-- captions drawn by repeatable reservoir sampling (every caption when there are fewer).
SELECT coalesce(lang(text), '(empty)') AS language, count(*) AS sampled_rows,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct
FROM (SELECT text FROM samples USING SAMPLE reservoir(100000 ROWS) REPEATABLE (0))
GROUP BY ALL
ORDER BY sampled_rows DESC, language;

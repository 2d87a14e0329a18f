-- Rows per URL host (the most frequent first), with each host's share of the pool.
-- param: limit = 50
WITH hosts AS (
    SELECT CASE WHEN url IS NULL THEN '(no url)'
                WHEN starts_with(lower(url), 'file:') THEN '(local file)'
                ELSE lower(split_part(split_part(split_part(split_part(url, '://', 2), '/', 1), '?', 1), ':', 1))
           END AS host
    FROM samples
)
SELECT CASE WHEN host = '' THEN '(no host)' ELSE regexp_replace(host, '^.*@', '') END AS host,
       sum(rows) AS rows, round(100.0 * sum(rows) / sum(sum(rows)) OVER (), 3) AS pct
FROM (SELECT host, count(*) AS rows FROM hosts GROUP BY host)
GROUP BY ALL
ORDER BY rows DESC, host
LIMIT $limit;

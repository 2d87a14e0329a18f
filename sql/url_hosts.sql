-- Rows per URL host (the most frequent first), with each host's share of the pool.
-- param: limit = 50
WITH raw AS (  -- the authority part, grouped first: the clean-up below then runs once per distinct value
    SELECT CASE WHEN url IS NULL THEN '(no url)'
                WHEN url ILIKE 'file:%' THEN '(local file)'
                ELSE split_part(split_part(url, '://', 2), '/', 1) END AS authority,
           count(*) AS rows
    FROM samples
    GROUP BY authority
),
hosts AS (
    SELECT CASE WHEN authority LIKE '(%' THEN authority
                ELSE coalesce(nullif(lower(regexp_replace(split_part(split_part(authority, '?', 1), '#', 1),
                                                          '^.*@|:[0-9]*$', '', 'g')), ''), '(no host)')
           END AS host,
           rows
    FROM raw
)
SELECT host, sum(rows) AS rows, round(100.0 * sum(rows) / sum(sum(rows)) OVER (), 3) AS pct
FROM hosts
GROUP BY host
ORDER BY rows DESC, host
LIMIT $limit;

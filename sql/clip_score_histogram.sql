-- Histogram of every CLIP score column (clip_<model>_similarity_score, and a pool's own pool_clip_*).
-- param: width = 0.02   (bin width)
WITH binned AS (
    SELECT score_column, floor(score / $width) * $width AS bin_start
    FROM (UNPIVOT (SELECT COLUMNS('^(pool_)?clip_.+_similarity_score$') FROM samples)
          ON COLUMNS(*) INTO NAME score_column VALUE score)
    WHERE NOT isnan(score)
)
SELECT score_column, round(bin_start, 6) AS bin_start, count(*) AS rows,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY score_column), 3) AS pct
FROM binned
GROUP BY score_column, bin_start
ORDER BY score_column, bin_start;

-- Highest and lowest scoring samples for every CLIP score column, with caption and URL.
-- param: n = 10   (rows per end)
WITH scores AS (
    SELECT score_column, uid, score
    FROM (UNPIVOT (SELECT uid, COLUMNS('^(pool_)?clip_.+_similarity_score$') FROM samples)
          ON COLUMNS('similarity_score$') INTO NAME score_column VALUE score)
    WHERE NOT isnan(score)
),
ends AS (
    SELECT score_column, 'highest' AS end_, unnest(arg_max({'uid': uid, 'score': score}, score, $n)) AS s
    FROM scores GROUP BY score_column
    UNION ALL
    SELECT score_column, 'lowest' AS end_, unnest(arg_min({'uid': uid, 'score': score}, score, $n)) AS s
    FROM scores GROUP BY score_column
),
picked AS (
    SELECT score_column, end_, s.uid AS uid, s.score AS score,
           row_number() OVER (PARTITION BY score_column, end_
                              ORDER BY CASE WHEN end_ = 'highest' THEN -s.score ELSE s.score END, s.uid) AS rank
    FROM ends
)
SELECT p.score_column, p.end_, p.rank, round(p.score, 4) AS score, p.uid, s.text, s.url
FROM picked p JOIN samples s USING (uid)
ORDER BY p.score_column, p.end_, p.rank;

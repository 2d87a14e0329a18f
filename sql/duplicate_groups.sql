-- Exact duplicate images: groups of rows sharing an image sha256, largest first, with example captions.
-- param: limit = 50
WITH groups AS (
    SELECT sha256, count(*) AS rows
    FROM samples
    WHERE sha256 IS NOT NULL AND sha256 <> ''
    GROUP BY sha256
    HAVING count(*) > 1
),
top AS (SELECT * FROM groups ORDER BY rows DESC, sha256 LIMIT $limit)
SELECT top.sha256, any_value(top.rows) AS rows, count(DISTINCT s.text) AS distinct_captions,
       list(s.uid ORDER BY s.uid)[1:5] AS first_uids, list(DISTINCT s.text)[1:3] AS some_captions
FROM top JOIN samples s USING (sha256)
GROUP BY top.sha256
ORDER BY rows DESC, top.sha256;

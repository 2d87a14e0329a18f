-- Overlap between two strategies' subsets: sizes, shared uids, and the Jaccard index.
-- param: a = ''   (first strategy name)
-- param: b = ''   (second strategy name)
WITH a AS (SELECT DISTINCT uid FROM subsets WHERE strategy = $a),
     b AS (SELECT DISTINCT uid FROM subsets WHERE strategy = $b),
     counts AS (
         SELECT (SELECT count(*) FROM a) AS size_a, (SELECT count(*) FROM b) AS size_b,
                (SELECT count(*) FROM a JOIN b USING (uid)) AS shared
     )
SELECT $a AS a, $b AS b, size_a, size_b, shared, size_a - shared AS only_a, size_b - shared AS only_b,
       round(shared / nullif(size_a + size_b - shared, 0), 4) AS jaccard
FROM counts;

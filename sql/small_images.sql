-- Images under a size limit: rows by the shorter original side, and how many fall under min_side.
-- param: min_side = 200   (DataComp's basic_filter keeps min(width, height) >= 200)
SELECT CASE WHEN least(original_width, original_height) IS NULL THEN 'unknown size'
            WHEN least(original_width, original_height) < $min_side THEN 'under min_side'
            ELSE 'at least min_side' END AS size_class,
       least(floor(least(original_width, original_height) / 50) * 50, 1000) AS shorter_side_bin,
       count(*) AS rows,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct
FROM samples
GROUP BY ALL
ORDER BY size_class DESC, shorter_side_bin;

-- Caption length breakdown: words and characters per caption, in buckets (null and empty counted apart).
-- Words are whitespace-separated, as Python's str.split() counts them (DataComp's basic_filter).
WITH measured AS (
    SELECT text,
           CASE WHEN text IS NULL THEN -1
                WHEN regexp_matches(text, '^\s*$') THEN 0
                -- plain single-spaced text (most captions) is split cheaply; the rest by regex
                WHEN NOT (contains(text, '  ') OR regexp_matches(text, '[\t\n\r\f\v]'))
                    THEN len(string_split(trim(text), ' '))
                ELSE len(string_split_regex(regexp_replace(text, '^\s+|\s+$', '', 'g'), '\s+'))
           END AS n_words
    FROM samples
)
SELECT CASE WHEN n_words = -1 THEN 'null' WHEN n_words = 0 THEN 'empty'
            WHEN n_words <= 2 THEN '1-2 words' WHEN n_words <= 5 THEN '3-5 words'
            WHEN n_words <= 10 THEN '6-10 words' WHEN n_words <= 20 THEN '11-20 words'
            ELSE '21+ words' END AS words,
       count(*) AS rows,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS pct,
       round(avg(length(text)), 1) AS mean_chars,
       max(length(text)) AS max_chars
FROM measured
GROUP BY ALL
ORDER BY min(n_words);

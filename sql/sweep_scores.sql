-- Sweep: each task's main metric per strategy over seeds (seeds, mean, sample standard deviation).
SELECT strategy, key, dataset, count(main_metric) AS seeds, round(avg(main_metric), 4) AS mean,
       round(stddev_samp(main_metric), 4) AS std
FROM sweep_eval GROUP BY strategy, key, dataset ORDER BY key, mean DESC, strategy;

-- Evaluation: the main metric of every task for every strategy, tasks in results order.
SELECT strategy, key, dataset, round(main_metric, 4) AS main_metric FROM eval ORDER BY strategy, key;

"""Evaluation the DataComp way: the task registry (tasks.py), data loaders (datasets.py), evaluators
(classification, retrieval, winogavil, wilds, fairness), results files (results.py), aggregation
(aggregate.py) and the run over one model (evaluate.py). `curate evaluate` and the evaluate stage use it."""

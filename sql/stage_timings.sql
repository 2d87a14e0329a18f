-- Every stage of the run: status, shards, wall seconds and throughput (from manifest.json).
SELECT stage, status, shards, seconds, items_per_s FROM stages;

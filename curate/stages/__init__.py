"""Pipeline stages: each a plain class over shards that the runner schedules (download, ...)."""

"""Pools: where candidates come from. `make_pool` maps a pool config to its class."""

from __future__ import annotations

from curate.config import DatacompPoolConfig, OpenclipartPoolConfig, ParquetPoolConfig
from curate.pools.base import POOL_COLUMNS, POOL_SCHEMA, Pool, PoolPart, limit_parts


def make_pool(cfg: DatacompPoolConfig | ParquetPoolConfig | OpenclipartPoolConfig) -> Pool:
    """The Pool for a validated pool config."""
    if isinstance(cfg, DatacompPoolConfig):
        from curate.pools.datacomp import DatacompPool

        return DatacompPool(cfg)
    if isinstance(cfg, ParquetPoolConfig):
        from curate.pools.parquet import ParquetPool

        return ParquetPool(cfg)
    from curate.pools.openclipart import OpenclipartPool

    return OpenclipartPool(cfg)


__all__ = ["POOL_COLUMNS", "POOL_SCHEMA", "Pool", "PoolPart", "limit_parts", "make_pool"]

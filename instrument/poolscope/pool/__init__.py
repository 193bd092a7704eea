"""The reference pool: an asyncio connection pool that emits its decisions as events.

>>> pool = Pool(factory, min_size=2, max_size=10, acquire_timeout=5.0, name="orders")
>>> async with pool:
...     async with pool.acquire() as conn:
...         ...
"""

from poolscope.pool.core import Pool
from poolscope.pool.errors import CircuitOpenError, PoolClosed, PoolError, PoolTimeout

__all__ = ["CircuitOpenError", "Pool", "PoolClosed", "PoolError", "PoolTimeout"]

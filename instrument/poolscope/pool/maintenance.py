"""The reference pool's housekeeping: idle and lifetime expiry, reclaim, idle
validation, min_size refill, autoscaling and resize."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from poolscope.pool import breaker as _breaker
from poolscope.pool import health as _health
from poolscope.pool.base import PoolBase
from poolscope.pool.records import (
    _RECLAIMED,
    C,
    _clock,
    _err,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger("poolscope.pool")


class Maintenance(PoolBase[C]):
    def _tick(self) -> float:
        if self._maintenance_interval is not None:
            return self._maintenance_interval
        periods = [
            p
            for p in (
                self.idle_timeout,
                self.max_lifetime,
                self.validation_interval,
                self.reclaim_after,
                self.autoscale_interval if self.autoscale else None,
            )
            if p is not None
        ]
        return min(1.0, max(0.005, min(periods, default=1.0) / 4))

    async def _housekeeper(self) -> None:
        last_scale = _clock()
        acquires, waited = self._n_acquires, self._n_waited
        while not self._closed:
            await asyncio.sleep(self._tick())
            try:
                self._expire_idle()
                self._reclaim()
                if self.validation_interval is not None and self.ping is not None:
                    await self._validate_idle()
                await self._refill()
                if self._autoscaler is not None:
                    self._autoscaler.sample(len(self._in_use), self.max_size)
                    now = _clock()
                    if now - last_scale >= self.autoscale_interval:
                        last_scale = now
                        decision = self._autoscaler.decide(
                            now,
                            self.max_size,
                            self._n_acquires - acquires,
                            self._n_waited - waited,
                        )
                        acquires, waited = self._n_acquires, self._n_waited
                        if decision is not None:
                            self.resize(decision[0], decision[1])
            except Exception as exc:  # a housekeeping bug must not stop housekeeping
                log.exception("pool %s: housekeeping failed: %s", self.name, _err(exc))

    def _expire_idle(self) -> None:
        now = _clock()
        for rec in list(self._idle):
            if rec.expires <= now:
                self._idle.remove(rec)
                self._retire(rec, "lifetime")
            elif (
                self.idle_timeout is not None
                and now - rec.last_used > self.idle_timeout
                and self._size > self.min_size
            ):
                self._idle.remove(rec)
                self._retire(rec, "idle_timeout", idle=now - rec.last_used)

    def _reclaim(self) -> None:
        if self.reclaim_after is None:
            return
        now = _clock()
        for rec in list(self._in_use.values()):
            held = now - rec.acquired_at
            if held <= self.reclaim_after:
                continue
            del self._in_use[rec.key]
            raw = rec.get()
            self._emit("reclaim", conn=str(rec.id), held=held)
            log.warning("pool %s: reclaimed connection %d held %.3gs", self.name, rec.id, held)
            self._retire(rec, "reclaimed", held=held)
            rec.state = _RECLAIMED
            if rec.wref is None:
                rec.raw = raw  # to recognise the holder's late release
            self._reclaimed[rec.key] = rec
            while len(self._reclaimed) > 1024:
                self._reclaimed.pop(next(iter(self._reclaimed)))
        self._check_drained()

    async def _validate_idle(self) -> None:
        assert self.validation_interval is not None
        now = _clock()
        due = [r for r in self._idle if now - r.checked > self.validation_interval]
        for rec in due:
            if self._closed:
                return
            try:
                self._idle.remove(rec)
            except ValueError:
                continue  # borrowed meanwhile
            if await self._validate(rec, self.validation_timeout):
                self._put_back(rec, touch=False)

    async def _refill(self) -> None:
        """Keep ``min_size`` open, unless the backend is down or the breaker open."""
        deficit = self.min_size - self._size
        if deficit <= 0 or self._closed or self._backend.state == _health.DOWN:
            return
        if self._breaker.state != _breaker.CLOSED:
            deficit = 1  # at most the breaker's trial connect (it may refuse)
        await asyncio.gather(
            *(self._open_one(validate=False) for _ in range(deficit)), return_exceptions=True
        )

    def resize(self, new_max: int, reason: str = "manual") -> None:
        """Change ``max_size`` (the autoscaler's lever; also public)."""
        if new_max < max(1, self.min_size):
            raise ValueError(f"max_size must be >= max(1, min_size), got {new_max}")
        previous, self.max_size = self.max_size, new_max
        if previous == new_max:
            return
        self._emit("resize", max=new_max, previous=previous, reason=reason)
        if new_max > previous:
            self._wake_for_slot()
        else:
            while self._size > new_max and self._idle:
                self._retire(self._idle.popleft(), "overflow")

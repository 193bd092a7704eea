"""The reference pool's heartbeat: probes of idle connections (or a reconnect
probe when the backend is in doubt) that drive its backend state."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from poolscope.pool import health as _health
from poolscope.pool.base import PoolBase
from poolscope.pool.config import _check_positive
from poolscope.pool.records import (
    _BUSY,
    C,
    _checked_at,
    _clock,
    _close_reason,
    _err,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger("poolscope.pool")


class Heartbeat(PoolBase[C]):
    def enable_heartbeat(self, interval: float) -> None:
        """Turn the heartbeat on (used by ``poolscope.instrument(heartbeat=...)``)."""
        _check_positive("heartbeat interval", interval, allow_none=False)
        if self.ping is None:
            raise ValueError("a heartbeat needs a ping callable (ping=...)")
        running = self.heartbeat_interval is not None
        self.heartbeat_interval = interval
        if self._opened and not self._closed and not running and self._loop is not None:
            self._tasks.append(self._loop.create_task(self._heartbeat_loop()))

    async def _heartbeat_loop(self) -> None:
        while not self._closed and self.heartbeat_interval is not None:
            if self._backend.state == _health.DOWN:
                await asyncio.sleep(self._backend.backoff())
            else:
                await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat_round()
            except Exception as exc:
                log.exception("pool %s: heartbeat failed: %s", self.name, _err(exc))

    async def _heartbeat_round(self) -> None:
        b = self._backend
        ok = await self._probe()
        if ok is None:
            return
        if ok:
            if b.state != _health.HEALTHY:
                b.set(_health.HEALTHY)
            return
        if b.state == _health.HEALTHY:
            b.set(_health.SUSPECT, b.last_error)
            ok = await self._probe()  # a second probe at once
            if ok:
                b.set(_health.HEALTHY)
            elif ok is False:
                b.probe_failed(b.last_error)
        else:
            b.probe_failed(b.last_error)

    async def _probe(self) -> bool | None:
        """Ping the least recently used idle connection; with none idle, skip -
        unless the backend is in doubt, then try to open one (a reconnect)."""
        if self._closed:
            return None
        if self._idle:
            # The connection checked longest ago, so that probes rotate over all.
            rec = min(self._idle, key=_checked_at)
            self._idle.remove(rec)
            rec.state = _BUSY
            self._busy += 1
            t0 = _clock()
            assert self.ping is not None
            try:
                await asyncio.wait_for(self.ping(rec.raw), self.heartbeat_timeout)  # type: ignore[arg-type]
            except Exception as exc:
                err = _err(exc)
                self._backend.last_error = err
                self._emit(
                    "heartbeat", conn=str(rec.id), ok=False, latency=_clock() - t0, error=err
                )
                self._busy -= 1
                self._retire(rec, _close_reason(exc), error=err)
                self._check_drained()
                return False
            except BaseException:
                self._busy -= 1
                self._retire(rec, "closed")
                self._check_drained()
                raise
            latency = _clock() - t0
            self._busy -= 1
            rec.checked = _clock()
            self._emit("heartbeat", conn=str(rec.id), ok=True, latency=latency, error=None)
            self._put_back(rec, touch=False)
            self._check_drained()
            return True
        if self._backend.state == _health.HEALTHY or self._size >= self.max_size:
            self._emit("heartbeat", conn="", ok=None, latency=None, error=None, skipped=True)
            return None
        # Reconnect probe: bypasses the breaker's gate but informs it, so that a
        # recovered backend also closes the breaker.
        self._size += 1
        t0 = _clock()
        try:
            rec = await self._connect(gated=False)
        except Exception as exc:
            self._release_slot()
            err = _err(exc)
            self._backend.last_error = err
            self._emit(
                "heartbeat", conn="", ok=False, latency=_clock() - t0, error=err, probe="connect"
            )
            return False
        except BaseException:
            self._release_slot()
            raise
        self._emit(
            "heartbeat",
            conn=str(rec.id),
            ok=True,
            latency=_clock() - t0,
            error=None,
            probe="connect",
        )
        self._put_back(rec)
        return True

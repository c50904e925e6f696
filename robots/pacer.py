"""Fixed-rate pacing for control loops, shared by the controller node, the follow loop and the benches."""

from __future__ import annotations

import time


class Pacer:
    """Absolute-deadline pacing for a control loop: sleep most of the period, busy-wait the last `spin_s`.

    An rclpy timer or a plain `sleep(period)` drifts and overshoots by ~0.1-0.2 ms; deadlines do not drift,
    and a missed deadline re-anchors (skips ticks) rather than bursting to catch up.
    """

    def __init__(self, rate_hz: float, spin_s: float = 3e-4) -> None:
        self.period = 1.0 / rate_hz
        self.spin_s = spin_s
        self._next = time.perf_counter() + self.period
        self._last: float | None = None

    def wait(self) -> float | None:
        """Block until the next tick; return |actual period - nominal| in seconds (None on the first tick)."""
        remaining = self._next - time.perf_counter()
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        while time.perf_counter() < self._next:
            pass
        now = time.perf_counter()
        err = None if self._last is None else abs(now - self._last - self.period)
        self._last = now
        self._next += self.period
        if now > self._next:
            self._next = now + self.period
        return err

"""Fixed-rate pacing for control loops, shared by the controller node, the follow loop and the benches."""

from __future__ import annotations

import os
import sys
import time

RT_PRIORITY = 50  # SCHED_FIFO priority of a control loop: above every normal thread, below the kernel's own
GIL_SWITCH_S = 2e-4  # how long a thread that wants the GIL waits before the holder is asked to drop it


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


def enable_realtime(
    priority: int = RT_PRIORITY,
    what: str = "control loop",
    helper_threads: tuple[int, ...] = (),
    gil_switch_s: float = GIL_SWITCH_S,
) -> tuple[bool, str]:
    """Put the calling thread (not the process) under SCHED_FIFO at `priority` where the OS allows it.

    A normal thread that sleeps to its deadline wakes when the scheduler gets round to it: on a loaded
    machine that is milliseconds late. A SCHED_FIFO thread preempts every normal one as soon as it is
    runnable. In Python it then still needs the GIL: a thread that wants it waits the switch interval (5 ms
    by default) before the holder is asked to let go, so the interval is lowered to `gil_switch_s` for the
    process, and `helper_threads` (native ids of threads that take the GIL often, such as a ROS executor)
    run SCHED_FIFO one level lower, so the scheduler never parks them while they hold it. Returns (done,
    one-line note for the log); where it is not permitted (no CAP_SYS_NICE and no rtprio limit) the loop
    runs at normal priority and the returned line says how to allow it.
    """
    sys.setswitchinterval(gil_switch_s)
    if not hasattr(os, "sched_setscheduler"):
        return False, f"{what}: no real-time scheduling on this OS; normal priority"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: the calling thread
        for tid in helper_threads:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(max(1, priority - 1)))
    except PermissionError:
        return False, (
            f"{what}: SCHED_FIFO not permitted, normal priority (allow it with CAP_SYS_NICE or an rtprio "
            f"limit >= {priority}, e.g. '@realtime - rtprio 99' in /etc/security/limits.conf)"
        )
    except OSError as e:
        return False, f"{what}: SCHED_FIFO refused ({e.strerror or e}); normal priority"
    helpers = f", {len(helper_threads)} helper thread(s) at {max(1, priority - 1)}" if helper_threads else ""
    return True, f"{what}: SCHED_FIFO priority {priority}{helpers}"

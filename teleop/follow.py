"""Teleoperation without ROS: an arm follows a leader through `mimic.robots.control.FollowController`.

    log = follow(leader, arm, rate_hz=200, seconds=10)     # both connected
    plot_follow(log, "tracking.png")

The loop is the controller node's, in plain Python (for scripts, tests and benchmarks): the leader is
read on its own thread, the newest reading goes to the FollowController, and what it returns is sent.
A command the arm refuses (its guard measures the spacing of arrivals, which thread switches jitter)
is counted in `counters["arm_refused"]` and that tick holds. A `LeaderError` is logged and the
loop goes on; the controller sends nothing once the newest reading is stale, so the arm holds (the
rule in mimic.teleop.leader). Everything is recorded for plots and error statistics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimic.robots.arm import Arm, CommandRefused
from mimic.robots.control import FollowController
from mimic.robots.pacer import Pacer
from mimic.teleop.leader import Leader, LeaderError

log = logging.getLogger(__name__)


@dataclass
class FollowLog:
    """Per control tick: wall time, newest leader target, command sent (NaN when holding), arm state."""

    t: list[float] = field(default_factory=list)
    leader_q: list[np.ndarray] = field(default_factory=list)
    command_q: list[np.ndarray] = field(default_factory=list)
    arm_t: list[float] = field(default_factory=list)
    arm_q: list[np.ndarray] = field(default_factory=list)
    leader_errors: list[tuple[float, int | None, str]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "t": np.array(self.t),
            "leader_q": np.array(self.leader_q),
            "command_q": np.array(self.command_q),
            "arm_t": np.array(self.arm_t),
            "arm_q": np.array(self.arm_q),
        }


def follow(
    leader: Leader,
    arm: Arm,
    rate_hz: float,
    seconds: float,
    stale_after_s: float = 0.1,
    on_tick: Callable[[float], None] | None = None,
) -> FollowLog:
    """Run the follow loop for `seconds` at `rate_hz` (leader and arm connected); `on_tick(t_since_start)`
    runs first on every tick (tests inject faults there).

    The leader is read on its own thread at whatever rate its bus allows (as the leader node publishes),
    so a slow bus (GELLO at 57,600 baud: ~40 Hz) does not slow the control loop, whose velocity limit is
    per tick.
    """
    ctl = FollowController(arm.spec, rate_hz, stale_after_s=stale_after_s)
    s = arm.state()
    ctl.reset(s.q, s.gripper, time.time())
    out = FollowLog()
    nan = np.full(arm.spec.dof, np.nan)
    newest: list = [None]  # the reader thread's latest LeaderReading
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                newest[0] = leader.read()
            except LeaderError as e:
                out.leader_errors.append((time.time(), e.servo_id, str(e)))
                if len(out.leader_errors) == 1 or out.leader_errors[-2][0] < time.time() - 1.0:
                    log.warning("leader: %s (holding the arm)", e)
                time.sleep(0.001)

    thread = threading.Thread(target=reader, name="leader-reader", daemon=True)
    thread.start()
    last_leader, seen, refused = nan, None, 0
    pacer = Pacer(rate_hz)
    t0 = time.time()
    try:
        while (t := time.time()) - t0 < seconds:
            pacer.wait()
            if on_tick is not None:
                on_tick(t - t0)
            r = newest[0]
            if r is not None and r is not seen:
                ctl.set_leader(r.t, r.q, r.gripper)
                last_leader, seen = r.q, r
            target = ctl.target(time.time())
            if target is not None:
                try:
                    arm.command(*target)
                except CommandRefused as e:
                    # the limiter spaced this step by its tick, but the arm measured the spacing of arrivals,
                    # which a thread switch can shrink; the arm keeps its last target, the next tick goes on
                    refused += 1
                    target = None
                    if refused == 1:
                        log.warning("arm refused a command (%s); holding for this tick", e)
            st = arm.state()
            out.t.append(t)
            out.leader_q.append(np.asarray(last_leader, float))
            out.command_q.append(nan if target is None else target[0])
            out.arm_t.append(st.t)
            out.arm_q.append(st.q.copy())
    finally:
        stop.set()
        thread.join(timeout=2.0)
    out.counters = {**ctl.counters.as_dict(), "arm_refused": refused}
    return out


def plot_follow(
    flog: FollowLog,
    path: str | Path,
    joint_names: tuple[str, ...] | None = None,
    title: str = "follower tracking the leader",
) -> Path:
    """PNG: per moving joint, leader target vs arm position; shaded where the leader failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = flog.arrays()
    t = a["t"] - a["t"][0]
    moving = [j for j in range(a["arm_q"].shape[1]) if np.ptp(a["arm_q"][:, j]) > 1e-3] or [0]
    fig, axes = plt.subplots(len(moving), 1, figsize=(8, 1.8 * len(moving) + 0.6), sharex=True, squeeze=False)
    err_t = np.array([e[0] for e in flog.leader_errors]) - a["t"][0] if flog.leader_errors else np.array([])
    for ax, j in zip(axes[:, 0], moving, strict=True):
        ax.plot(t, a["leader_q"][:, j], label="leader", lw=1.2)
        ax.plot(a["arm_t"] - a["t"][0], a["arm_q"][:, j], label="arm", lw=1.0)
        for te in err_t:
            ax.axvspan(te - 0.01, te + 0.01, color="red", alpha=0.15, lw=0)
        ax.set_ylabel(joint_names[j] if joint_names else f"joint {j + 1}", fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 0].set_title(title + (" (red: leader errors, arm holding)" if len(err_t) else ""), fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

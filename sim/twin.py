"""TwinArm: the MuJoCo twin behind the `mimic.robots.arm.Arm` interface, paced to wall-clock time.

A background thread advances physics so that simulated time follows `time.time()`, applies commands once
their injected delay has passed, and keeps a short history of states so that `state()` and `capture()`
can return readings as old as the configured latency, stamped with their true capture time.

Importing this module registers the `twin:<arm>` scheme with mimic.robots.factory (which imports it by
name the first time a twin URI is made), so the arm factory never imports the simulator itself.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np

from mimic.robots.arm import Arm, ArmError, ArmState, CommandGuard
from mimic.robots.factory import register
from mimic.sim.env import TwinEnv
from mimic.sim.latency import LatencyConfig

_HISTORY_S = 2.0  # seconds of past states kept for delayed readings


class TwinArm(Arm):
    def __init__(
        self,
        arm: str = "franka",
        task: str | None = None,
        seed: int = 0,
        realtime: bool = True,
        latency: LatencyConfig | None = None,
    ):
        # task None: the bare arm scene (the reach scene, whose goal is a marker without physics).
        self.env = TwinEnv(task or "reach", arm, seed=seed, cameras=())
        self.spec = self.env.spec
        self.seed, self.realtime = seed, realtime
        self.latency = latency or LatencyConfig()
        self.guard = CommandGuard(self.spec)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: deque[tuple[float, np.ndarray, float | None]] = deque()
        self._hist_t: deque[float] = deque()
        # (arm q, arm dq, full qpos, gripper width, simulated time) per recorded instant
        self._hist: deque[tuple[np.ndarray, np.ndarray, np.ndarray, float, float]] = deque()
        self._scratch = mujoco.MjData(self.env.model)
        self._obj_scratch = mujoco.MjData(
            self.env.model
        )  # object_state()'s own: capture() renders from _scratch
        self._render_s = 0.0  # running estimate of one capture's render time
        self._connected = False

    # --- Arm interface ------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if self._connected:
            return
        self.env.reset(seed=self.seed)
        with self._lock:  # a new episode: no reading may show the previous one
            self._hist_t.clear()
            self._hist.clear()
        self._record(time.time())
        self.guard.reset(self.env.data.qpos[self.env.arm_qpos], time.time())
        self._connected = True
        if self.realtime:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"twin-{self.spec.name}", daemon=True)
            self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._connected = False

    def state(self) -> ArmState:
        self._require()
        t, (q, dq, _, g, _) = self._delayed(self.latency.draw(self.latency.joint_state_s))
        return ArmState(t=t, q=q.copy(), dq=dq.copy(), gripper=g)

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        self._require()
        q = self.guard.check(q_target, gripper)
        due = time.time() + self.latency.draw(self.latency.command_s)
        with self._lock:
            self._pending.append((due, q, gripper))

    def stop(self) -> None:
        if not self._connected:
            return
        with self._lock:
            self._pending.clear()
            q = self.env.data.qpos[self.env.arm_qpos].copy()
            self.env.data.ctrl[: self.spec.dof] = q
        self.guard.reset(q)

    # --- twin extras ---------------------------------------------------------------------------------
    def capture(self, camera: str = "scene", size: tuple[int, int] = (96, 96)) -> tuple[float, np.ndarray]:
        """(capture time, uint8 HxWx3) of the scene as it was camera latency ago.

        The frame returns `delay` after its capture time, render included: the snapshot is taken `delay`
        minus the expected render time ago and any time left over is slept, so the injected camera latency
        is exactly the capture-to-arrival time a calibration measures.
        """
        self._require()
        delay = self.latency.draw(self.latency.camera_s)
        t_start = time.time()
        t, (_, _, qpos, _, t_sim) = self._delayed(max(delay - self._render_s, 0.0))
        d = self._scratch
        d.qpos[:], d.time = qpos, t_sim
        mujoco.mj_kinematics(self.env.model, d)
        mujoco.mj_comPos(self.env.model, d)
        mujoco.mj_camlight(self.env.model, d)  # camera and light poses, needed to render this state
        img = self.env.render(camera, size, d)
        self._render_s = 0.8 * self._render_s + 0.2 * (time.time() - t_start)
        if delay > 0:
            time.sleep(max(0.0, t + delay - time.time()))
        return t, img

    def object_state(self, delay_s: float = 0.0) -> tuple[float, np.ndarray]:
        """(capture time, the task's object state) as it was `delay_s` ago: what a tracker working on camera
        frames that old reports (sim.TwinEnv.object_state; a moving goal is where it was then)."""
        self._require()
        t, (_, _, qpos, _, t_sim) = self._delayed(delay_s)
        with self._lock:
            d = self._obj_scratch
            d.qpos[:], d.time = qpos, t_sim
            return t, self.env.object_state(d).copy()

    def advance(self, seconds: float) -> None:
        """Step physics by `seconds` without pacing (realtime=False); readings are stamped with time.time()."""
        if self.realtime:
            raise ArmError(
                f"twin:{self.spec.name}: advance() is for realtime=False; the thread paces physics"
            )
        self._require()
        self._simulate(int(round(seconds / self.env.model.opt.timestep)), time.time())

    # --- internals -----------------------------------------------------------------------------------
    def _require(self) -> None:
        if not self._connected:
            raise ArmError(f"twin:{self.spec.name}: not connected; call connect() first")

    def _record(self, t: float) -> None:
        d, e = self.env.data, self.env
        self._hist_t.append(t)
        self._hist.append(
            (
                d.qpos[e.arm_qpos].copy(),
                d.qvel[e.arm_qpos].copy(),
                d.qpos.copy(),
                e.gripper_width(),
                float(d.time),
            )
        )
        while self._hist_t and self._hist_t[0] < t - _HISTORY_S:
            self._hist_t.popleft()
            self._hist.popleft()

    def _delayed(self, delay: float):
        with self._lock:
            ts = list(self._hist_t)
            i = max(bisect.bisect_right(ts, time.time() - delay) - 1, 0)
            return ts[i], self._hist[i]

    def _simulate(self, n: int, now: float) -> None:
        e, dof = self.env, self.spec.dof
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                _, q, g = self._pending.popleft()
                e.data.ctrl[:dof] = q
                if g is not None:
                    e.data.ctrl[dof:] = g / 2
            if n > 0:
                mujoco.mj_step(e.model, e.data, nstep=n)
            self._record(now)

    def _run(self) -> None:
        dt = self.env.model.opt.timestep
        run_paced(self._stop, dt, max(1.0 / self.spec.control_rate_hz, dt), self._simulate)


MAX_DEBT_STEPS = 50  # physics steps a paced twin may fall behind (0.1 s at 2 ms) before it drops the debt


def run_paced(
    stop: threading.Event, dt: float, period: float, simulate: Callable[[int, float], None]
) -> None:
    """Keep simulated time on `time.time()` until `stop` is set: about every `period` s, `simulate(n, now)`
    with the n physics steps of `dt` due since the last call (n may be 0). A CPU-starved process that fell more
    than MAX_DEBT_STEPS behind drops the debt instead of bursting, so the twin never jumps ahead of a command."""
    t_sim = time.time()
    while not stop.is_set():
        now = time.time()
        n = int((now - t_sim) / dt)
        if n > MAX_DEBT_STEPS:
            t_sim, n = now - MAX_DEBT_STEPS * dt, MAX_DEBT_STEPS
        t_sim += n * dt
        simulate(n, now)
        time.sleep(max(0.0, t_sim + period - time.time()))


def from_uri(target: str, **kwargs: Any) -> TwinArm:
    """`twin:<arm>` for mimic.robots.factory.make_arm; a bare `twin:` is the Franka twin."""
    return TwinArm(target or "franka", **kwargs)


register("twin", from_uri)

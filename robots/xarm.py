"""xArm7 backend on xarm-python-sdk: servo mode (mode 1) joint streaming with `set_servo_angle_j`.

The SDK keeps a report socket (port 30003, the 'real' report: joint angles, state and mode at the
controller's report rate) and answers requests on port 502. Our streaming thread sends each newly accepted
target at its next tick (at most `rate_hz`, 250 Hz by default as UFactory recommends for servo mode; servo
mode holds the last one).

Link health comes from the controller's report stream, which it sends at a fixed rate: every report frame
is one tick of the controller's clock (`reports` counts them). A watchdog thread, which takes no lock an SDK
call holds, latches a fault once no frame has arrived for `stale_periods` periods of `rate_hz` (3 = 12 ms at
250 Hz; the controller's real-time report must run at `rate_hz` or faster), and `state()` and `command()`
check the same age themselves, so no older state is returned and no command accepted. The real report
carries no error codes, and the SDK only refreshes them on a request, so an error poller reads them
(`get_err_warn_code`) at `error_poll_hz` (>= 10 Hz) whether or not targets are being sent, and latches on
any controller error (warnings are kept in `warn_code` and logged). A fault is also latched when the SDK
reports the control socket closed, when a servo command returns a non-zero code (controller error,
wrong/corrupt answer, timeout), or when the SDK drops the report socket (it does so on a frame whose length
prefix is wrong). After a fault nothing more is sent and every call raises ArmError. `disconnect()` returns
within `disconnect_timeout_s` (< 1 s) whatever the controller does: an SDK that has not closed by then is
left to finish on its own thread.

The SDK gives no joint velocities in the real report, so `dq` is the difference of successive reports.
Gripper: with `gripper=True`, the xArm Gripper on the tool RS-485 port through the SDK's Modbus gripper
calls (`set_gripper_position(pulse)`, `get_gripper_position()`), enabled at connect and driven from its own
thread at `gripper_rate_hz`; 850 pulses = 85 mm open. Without it (the default: not every xArm carries
one) `command(gripper=...)` is range-checked but not sent, `state().gripper` is 0.0 and
`gripper_supported` is False.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mimic.robots.arm import Arm, ArmError, ArmState, CommandGuard, FaultLatch
from mimic.robots.backend_options import split_options
from mimic.robots.factory import register
from mimic.robots.specs import get_spec

log = logging.getLogger(__name__)

ERROR_POLL_FAILURES = 3  # consecutive failed error-code requests that make a fault


@dataclass
class XArmConfig:
    host: str
    rate_hz: float = 250.0
    stale_periods: float = 3.0  # no report frame for this many periods of rate_hz = connection lost
    command_timeout_s: float = 0.1  # how long the SDK waits for a servo command's answer
    error_poll_hz: float = 20.0  # controller error/warning codes read this often (the real report lacks them)
    connect_timeout_s: float = 5.0
    disconnect_timeout_s: float = 0.8
    gripper: bool = False  # the xArm Gripper on the tool RS-485 port
    gripper_rate_hz: float = 20.0
    gripper_speed: int = 1500  # SDK speed units


class XArm(FaultLatch, Arm):
    """`xarm:<host>`: a UFactory xArm7 (or the protocol peer) behind the Arm interface."""

    def __init__(self, host: str, **kwargs: Any):
        host, options = split_options("xarm", host, XArmConfig)  # `xarm:<host>?stale_periods=5&...`
        if not host:
            raise ValueError("xarm: give the controller's IP, e.g. xarm:192.168.1.185")
        self.config = XArmConfig(host=host, **{**options, **kwargs})
        self.spec = get_spec("xarm7")
        self.name = f"xarm:{host}"
        self.gripper_supported = self.config.gripper
        self._gripper_target: float | None = None
        self._gripper_width = 0.0
        self.guard = CommandGuard(self.spec)
        self._api: Any = None
        self._state: ArmState | None = None
        self._fresh_mono = 0.0  # arrival of the newest report frame (monotonic clock)
        self.reports = 0  # report frames received: the controller's clock, one tick per frame
        self.warn_code = 0
        self._target: np.ndarray | None = None
        self._target_new = False
        self._init_latch()
        self.commands_sent = 0

    # --- Arm interface ------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._api is not None:
            return
        from xarm.wrapper import XArmAPI  # lazy: the hw extra is optional

        cfg = self.config
        try:
            api = XArmAPI(
                cfg.host, is_radian=True, report_type="real", check_joint_limit=False, do_not_open=True
            )
            api.connect()
        except Exception as e:
            raise ArmError(f"{self.name}: cannot connect: {e}") from None
        if not api.connected:
            raise ArmError(f"{self.name}: cannot connect to {cfg.host}:502")
        self._api, self._state = api, None
        self._fault, self.fault_time = None, None
        api.register_report_callback(
            self._on_report,
            report_cartesian=False,
            report_joints=True,
            report_state=True,
            report_error_code=True,
            report_warn_code=False,
            report_mtable=False,
            report_mtbrake=False,
            report_cmd_num=False,
        )
        try:
            for name, call in (
                ("motion_enable", lambda: api.motion_enable(True)),
                ("set_mode(1)", lambda: api.set_mode(1)),
                ("set_state(0)", lambda: api.set_state(0)),
            ):
                if (code := call()) != 0:
                    raise ArmError(f"{self.name}: {name} failed with code {code} (error {api.error_code})")
            deadline = time.time() + cfg.connect_timeout_s
            while self._state is None or api.mode != 1 or api.state not in (0, 1, 2):
                if time.time() > deadline:
                    raise ArmError(
                        f"{self.name}: no servo-mode report within {cfg.connect_timeout_s:.1f} s "
                        f"(mode {api.mode}, state {api.state})"
                    )
                time.sleep(0.01)
        except Exception:
            self._api = None
            api.disconnect()
            raise
        if cfg.gripper:
            self._enable_gripper(api)
            with self._lock:
                st = self._state
                self._state = ArmState(t=st.t, q=st.q, dq=st.dq, gripper=self._gripper_width)
        api.set_timeout(cfg.command_timeout_s)
        self.guard.reset(self._state.q, self._state.t)
        with self._lock:
            self._fresh_mono = time.monotonic()  # the watchdog counts from now
        loops = [self._stream, self._watchdog, self._error_poll]
        self._start_threads(*loops, *([self._gripper_loop] if cfg.gripper else []))

    def disconnect(self) -> None:
        """Release the controller within `disconnect_timeout_s`, whatever it does."""
        deadline = time.monotonic() + self.config.disconnect_timeout_s
        stopped = self._stop_threads(timeout_s=min(0.3, self.config.disconnect_timeout_s / 2))
        if self._api is not None:
            api, self._api = self._api, None
            if not stopped:  # a loop is still inside the SDK: do not close its connection under it
                self._orphan(api)
                return
            closer = threading.Thread(target=_close_api, args=(api, self._on_report), daemon=True)
            closer.start()
            closer.join(timeout=max(0.0, deadline - time.monotonic()))
            if closer.is_alive():  # the SDK is still joining its threads: it finishes on its own
                self._orphan(api)

    def state(self) -> ArmState:
        self._require()
        self._check_link()
        with self._lock:
            self._raise_if_fault()
            return self._state

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        self._require()
        self._check_link()
        q = self.guard.check(q_target, gripper)
        with self._lock:
            self._raise_if_fault()
            self._target, self._target_new = q, True
            if gripper is not None:
                self._gripper_target = float(gripper)

    def stop(self) -> None:
        """Stop streaming; servo mode holds the last target, which is where the arm already is or is going."""
        if self._api is None:
            return
        with self._lock:
            self._target, self._target_new = None, False
            q = self._state.q if self._state is not None else None
        if q is not None:
            self.guard.reset(q)

    # --- internals -----------------------------------------------------------------------------------
    def _sdk_open(self) -> bool:
        return self._api is not None

    def _drop_target(self) -> None:
        self._target, self._target_new = None, False

    @property
    def stale_after_s(self) -> float:
        return self.config.stale_periods / self.config.rate_hz

    def _on_report(self, report: dict) -> None:
        now, mono = time.time(), time.monotonic()
        q = np.asarray(report["joints"][: self.spec.dof], dtype=float)
        with self._lock:
            prev = self._state
            dq = np.zeros_like(q)
            if prev is not None and now - prev.t > 1e-4:
                dq = (q - prev.q) / (now - prev.t)
            self._state = ArmState(t=now, q=q, dq=dq, gripper=self._gripper_width)
            self._fresh_mono = mono
            self.reports += 1
        if report.get("error_code"):
            self._latch_now(f"{self.name}: controller error code {report['error_code']}; stopped commanding")

    def _stream(self) -> None:
        period = 1.0 / self.config.rate_hz
        next_tick = time.perf_counter()
        while not self._stop.is_set():
            with self._send_lock:
                with self._lock:
                    if self._fault is not None:
                        return
                    target = self._target if self._target_new else None
                    self._target_new = False
                    if target is not None:
                        self.commands_sent += 1  # counted as it starts: a fault seen later stops the next one
                if target is not None:
                    try:
                        code = self._api.set_servo_angle_j(target.tolist(), is_radian=True)
                    except Exception as e:
                        code = f"{type(e).__name__}: {e}"
                    if code != 0:
                        self._latch(
                            f"{self.name}: servo command failed (SDK code {code}); stopped commanding"
                        )
                        return
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.perf_counter()

    def _enable_gripper(self, api: Any) -> None:
        steps = (
            ("set_gripper_mode(0)", lambda: api.set_gripper_mode(0)),
            ("set_gripper_enable", lambda: api.set_gripper_enable(True)),
            ("set_gripper_speed", lambda: api.set_gripper_speed(self.config.gripper_speed)),
        )
        for name, call in steps:
            if (code := call()) != 0:
                self._api = None
                api.disconnect()
                raise ArmError(f"{self.name}: gripper {name} failed with code {code}")
        code, pulses = api.get_gripper_position()
        if code != 0 or pulses is None:
            self._api = None
            api.disconnect()
            raise ArmError(f"{self.name}: gripper position read failed with code {code}")
        self._gripper_width = self._width(pulses)

    def _width(self, pulses: float) -> float:
        """xArm Gripper pulses (0 closed .. 850 open) -> opening width in meters, clipped to the spec."""
        return float(min(max(pulses / 10000.0, self.spec.gripper_min), self.spec.gripper_max))

    def _gripper_loop(self) -> None:
        period = 1.0 / self.config.gripper_rate_hz
        sent: int | None = None
        while not self._stop.wait(period):
            api = self._api
            if api is None:
                return
            with self._lock:
                target = self._gripper_target
            with self._send_lock:
                if self._fault is not None:
                    return
                if target is not None and (pulses := int(round(target * 10000.0))) != sent:
                    code = api.set_gripper_position(pulses, wait=False, wait_motion=False)
                    if code != 0:
                        self._latch(
                            f"{self.name}: gripper command failed (SDK code {code}); stopped commanding"
                        )
                        return
                    sent = pulses
            code, pulses = api.get_gripper_position()
            if code != 0 or pulses is None:
                self._latch(f"{self.name}: gripper read failed (SDK code {code}); stopped commanding")
                return
            self._gripper_width = self._width(pulses)

    def _check_link(self) -> None:
        """Latch when the report stream has been quiet for `stale_periods` periods or the SDK has dropped a
        socket; attribute reads only, no lock an SDK call can hold."""
        api = self._api
        if api is None or self._fault is not None:
            return
        with self._lock:
            age = time.monotonic() - self._fresh_mono
            reports = self.reports
        if not api.connected:
            self._latch_now(f"{self.name}: control connection closed by the controller; stopped commanding")
        elif not getattr(api.arm, "reported", True):  # the SDK drops the report socket on a bad frame
            self._latch_now(
                f"{self.name}: report stream closed (bad frame or connection lost); stopped commanding"
            )
        elif age > self.stale_after_s:
            self._latch_now(
                f"{self.name}: controller silent or connection lost: no report frame after #{reports} for "
                f"{age * self.config.rate_hz:.1f} control periods ({age * 1e3:.1f} ms); stopped commanding"
            )

    def _watchdog(self) -> None:
        """Wake when the newest report turns stale (or every period, for the socket checks)."""
        period = 1.0 / self.config.rate_hz
        while not self._stop.is_set():
            with self._lock:
                wait = self._fresh_mono + self.stale_after_s - time.monotonic()
            if self._stop.wait(min(period, max(wait, 0.0)) + 1e-4):
                return
            self._check_link()

    def _error_poll(self) -> None:
        """Controller error and warning codes at `error_poll_hz`: the real report does not carry them."""
        period = 1.0 / self.config.error_poll_hz
        failed = 0
        while not self._stop.wait(period):
            api = self._api
            if api is None or self._fault is not None:
                return
            try:
                code, (error, warn) = api.get_err_warn_code()
            except Exception as e:  # noqa: BLE001 - the SDK raises on a socket that went away
                code, error, warn = f"{type(e).__name__}: {e}", 0, 0
            if code != 0:  # one late answer is not a fault (the watchdog judges the link); three in a row are
                failed += 1
                if failed >= ERROR_POLL_FAILURES:
                    self._latch_now(
                        f"{self.name}: controller error codes unreadable ({failed} requests failed, last SDK "
                        f"code {code}); stopped commanding"
                    )
                    return
                continue
            failed = 0
            if warn != self.warn_code:
                self.warn_code = warn
                if warn:
                    log.warning("%s: controller warning code %s", self.name, warn)
            if error:
                self._latch_now(
                    f"{self.name}: controller error code {error} (warning code {warn}); stopped commanding"
                )
                return


def _close_api(api: Any, callback: Any) -> None:
    try:
        api.release_report_callback(callback)
        api.disconnect()
    except Exception:  # noqa: BLE001 - the connection may already be gone; nothing else to release
        pass


register("xarm", XArm)  # `xarm:<host>` URIs (mimic.robots.factory)

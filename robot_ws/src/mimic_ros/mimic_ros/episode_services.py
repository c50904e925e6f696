"""~/stop, ~/discard and ~/status of a node that records episodes into one store, shared by the recorders.

The arm recorder and the handheld recorder commit, mark and report episodes the same way, because other
nodes and the session tooling read what they say: the Trigger messages, the one-line "episode N committed"
log (`mimic_ros.progress` counts it), the `episode_marks` root attrs (a stalled episode is committed only
with its mark) and the status JSON. Keeping that in one place keeps the two recorders from drifting apart.
A node keeps what really differs: its store (`DatasetWriter` or `HandheldCapture`), the payload of a stall
mark, its own counters in the status and the episode summary, and the key of its closing status line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mimic.data.episode_marks import commit_marked
from mimic_ros.runtime import ManagedNode

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class EpisodeStore(Protocol):
    """What the services call on a store: `DatasetWriter` and `HandheldCapture` both fit."""

    def end_episode(self) -> int: ...

    def discard_episode(self) -> None: ...

    def close(self) -> None: ...


class EpisodeServices(ManagedNode):
    """A recorder node's episode services; the node sets the state below and overrides the hooks.

    `_on_start` stays with the node: what must hold before an episode opens (store created, streams alive)
    differs between recorders.
    """

    STATUS_KEY: str  # key of the status line `close` prints ({"<key>": status})

    cfg: Any  # the node's config dataclass; `cfg.path` is the store
    recording: bool
    stalled: str | None  # why the open episode stopped taking samples
    failed: str | None  # why the open episode is lost (it is discarded at ~/stop)
    received: dict[str, int]
    last_episode: dict

    # --- hooks -------------------------------------------------------------------------------------
    def _episode_store(self) -> EpisodeStore | None:
        """What commits, discards and closes; None before the store exists."""
        raise NotImplementedError

    def _episode_writer(self) -> Any | None:
        """The `DatasetWriter` underneath: its root attrs hold the marks, its ends count the episodes."""
        raise NotImplementedError

    def _stall_mark(self) -> dict:
        """The `episode_marks[<index>]` entry of a stalled episode."""
        return {"stalled": self.stalled}

    def _episode_fields(self) -> dict:
        """The node's fields of the committed episode's summary, after index, steps and stalled."""
        return {}

    def _status_fields(self) -> dict:
        """The node's status fields between `received` and `last_episode`."""
        return {}

    # --- services ----------------------------------------------------------------------------------
    def _serve_episodes(
        self, on_start: Callable[[Trigger.Request, Trigger.Response], Trigger.Response]
    ) -> None:
        """Create ~/start (the node's), ~/stop, ~/discard and the latched ~/status publisher."""
        self.create_service(Trigger, "~/start", on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.status_pub = self.create_publisher(String, "~/status", LATCHED)

    def _reply(self, response: Trigger.Response, ok: bool, message: str) -> Trigger.Response:
        response.success, response.message = ok, message
        if ok:  # (rclpy refuses two severities from one call site)
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)
        self._publish_status()
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self.recording:
            return self._reply(response, False, "not recording")
        self.recording = False
        store = self._episode_store()
        if self.failed:
            store.discard_episode()
            return self._reply(response, False, f"episode discarded: {self.failed}")
        index = self._n_episodes()
        mark = self._stall_mark() if self.stalled else None
        try:
            steps = commit_marked(self._episode_writer().root, store.end_episode, index, mark)
        except ValueError as e:
            return self._reply(response, False, f"episode discarded: {e}")
        self.last_episode = {
            "index": index,
            "steps": steps,
            "stalled": self.stalled,
            **self._episode_fields(),
        }
        self.get_logger().info(
            f"episode {index} committed: {steps} steps"
            + (f" (marked: {self.stalled})" if self.stalled else "")
        )
        return self._reply(response, True, json.dumps(self.last_episode))

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self.recording:
            return self._reply(response, False, "not recording")
        self.recording = False
        self._episode_store().discard_episode()
        return self._reply(response, True, f"episode {self._n_episodes()} discarded")

    # --- status ------------------------------------------------------------------------------------
    def _n_episodes(self) -> int:
        writer = self._episode_writer()
        return int(writer._ends.shape[0]) if writer is not None else 0

    def status(self) -> dict:
        return {
            "path": self.cfg.path,
            "recording": self.recording,
            "episodes": self._n_episodes(),
            "steps": int(getattr(self._episode_writer(), "_rows", 0)) if self.recording else 0,
            "received": dict(self.received),
            **self._status_fields(),
            "last_episode": self.last_episode,
        }

    def _publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(self.status())))

    def close(self) -> None:
        store = self._episode_store()
        if store is not None:
            if self.recording:
                self.get_logger().warning("stopping with an open episode: it is discarded (not committed)")
            store.close()
        print(json.dumps({self.STATUS_KEY: self.status()}), flush=True)

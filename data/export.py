"""Human- and tool-facing outputs of a store: trajectory plot (PNG), camera video (MP4), MCAP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mimic.data.dataset import DatasetError, ReplayDataset

JOINT_KEY = "robot0_joint_pos"

# ROS 2 message definitions (the concatenated form rosbag2/mcap-ros2 expect).
_HEADER = """================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""
JOINT_STATE_DEF = (
    "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n"
    "float64[] effort\n" + _HEADER
)
COMPRESSED_IMAGE_DEF = "std_msgs/Header header\nstring format\nuint8[] data\n" + _HEADER


def camera_keys(ds: ReplayDataset) -> list[str]:
    return [k for k in ds.keys if ds.array(k).ndim == 4 and ds.array(k).dtype == np.uint8]


def _episode(ds: ReplayDataset, episode: int) -> None:
    if not 0 <= episode < ds.n_episodes:
        raise DatasetError(f"{ds.path}: episode {episode} out of range (store has {ds.n_episodes})")


def plot(ds: ReplayDataset, out: str | Path, episode: int = 0) -> None:
    """One panel per lowdim key (joints, gripper, action) against grid time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _episode(ds, episode)
    keys = [k for k in ds.keys if k != "timestamp" and not k.endswith("_t") and k not in camera_keys(ds)]
    if not keys:
        raise DatasetError(f"{ds.path}: no lowdim keys to plot")
    ep = ds.episode(episode, [*keys, "timestamp"])
    t = ep["timestamp"] - ep["timestamp"][0]
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 2.4 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        y = ep[key].reshape(len(t), -1)
        names = list(ds.attrs.get("joint_names") or [])
        labels = (
            names if key == JOINT_KEY and len(names) == y.shape[1] else [str(j) for j in range(y.shape[1])]
        )
        for j in range(y.shape[1]):
            ax.plot(t, y[:, j], label=labels[j])
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
        if y.shape[1] <= 10:
            ax.legend(fontsize=6, ncol=min(y.shape[1], 10), loc="upper right")
    axes[-1, 0].set_xlabel("time since episode start [s]")
    fig.suptitle(f"{Path(ds.path).name} episode {episode} ({ds.attrs.get('robot', '')})")
    fig.tight_layout()
    fig.savefig(str(out), dpi=90)
    plt.close(fig)


def video(ds: ReplayDataset, out: str | Path, episode: int = 0) -> int:
    """All camera streams side by side at the dataset fps; returns frames written."""
    import imageio.v2 as imageio

    _episode(ds, episode)
    cams = camera_keys(ds)
    if not cams:
        raise DatasetError(f"{ds.path}: no camera (uint8 HxWx3) keys to render")
    ep = ds.episode(episode, cams)
    h = max(ep[k].shape[1] for k in cams)
    frames = []
    for i in range(len(ep[cams[0]])):
        tiles = [np.pad(ep[k][i], ((0, h - ep[k].shape[1]), (0, 0), (0, 0))) for k in cams]
        frame = np.concatenate(tiles, axis=1)
        pad = [(0, (-frame.shape[0]) % 16), (0, (-frame.shape[1]) % 16), (0, 0)]  # codec-friendly size
        frames.append(np.pad(frame, pad))
    imageio.mimwrite(
        str(out), frames, fps=float(ds.attrs.get("fps", 10)), codec="libx264", macro_block_size=1
    )
    return len(frames)


def export_mcap(ds: ReplayDataset, out: str | Path) -> int:
    """JointState on /robot0/joint_states, CompressedImage (JPEG) on /<camera key>; stamped by capture time."""
    import imagecodecs
    from mcap_ros2.writer import Writer

    if JOINT_KEY not in ds.keys:
        raise DatasetError(f"{ds.path}: missing key 'data/{JOINT_KEY}' for JointState export")
    names = list(ds.attrs.get("joint_names") or [])
    cams = camera_keys(ds)
    count = 0
    with open(out, "wb") as f:
        w = Writer(f)
        js = w.register_msgdef("sensor_msgs/msg/JointState", JOINT_STATE_DEF)
        ci = w.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_DEF)
        for e in range(ds.n_episodes):
            ep = ds.episode(e, [JOINT_KEY, f"{JOINT_KEY}_t", *cams, *(f"{k}_t" for k in cams)])
            for i, (q, t) in enumerate(zip(ep[JOINT_KEY], ep[f"{JOINT_KEY}_t"], strict=True)):
                ns = int(round(t * 1e9))
                stamp = {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}
                w.write_message(
                    "/robot0/joint_states",
                    js,
                    {
                        "header": {"stamp": stamp, "frame_id": "base"},
                        "name": names or [f"joint{j}" for j in range(len(q))],
                        "position": [float(v) for v in q],
                        "velocity": [],
                        "effort": [],
                    },
                    log_time=ns,
                    publish_time=ns,
                    sequence=count,
                )
                count += 1
                for k in cams:
                    tk = int(round(ep[f"{k}_t"][i] * 1e9))
                    w.write_message(
                        f"/{k}",
                        ci,
                        {
                            "header": {
                                "stamp": {"sec": tk // 1_000_000_000, "nanosec": tk % 1_000_000_000},
                                "frame_id": k,
                            },
                            "format": "jpeg",
                            "data": bytes(imagecodecs.jpeg_encode(ep[k][i], level=90)),
                        },
                        log_time=tk,
                        publish_time=tk,
                        sequence=count,
                    )
                    count += 1
        w.finish()
    return count

"""Human- and tool-facing outputs of a store: trajectory plot (PNG), camera video (MP4), MCAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mimic.data.dataset import DatasetError, ReplayDataset

JOINT_KEY = "robot0_joint_pos"


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
    """Every stream of the store on the live session's topics (`mimic.data.mcap_topics`); returns messages.

    Why this shape: a bag exported here and a bag recorded from a live session are interchangeable, for
    tools (Foxglove, ros2 bag play) and for `import-mcap`. Header stamps are the capture times `<key>_t`,
    log times those plus the stream's recorded latency; a sample several grid rows used (a camera slower
    than the grid) is written once, as the live stream sent it once. Each episode sits between a
    `/recorder/status` start and stop, as the recorder reports its own, and the store's attrs and routes
    ride along as MCAP metadata so an import rebuilds the same streams. Episodes must not overlap in time:
    a bag separates them by time alone.
    """
    import imagecodecs
    from mcap_ros2.writer import Writer

    from mimic.data import mcap_topics as mt

    attrs = ds.attrs
    specs = dict(attrs["streams"])
    routes, dof = _mcap_routes(ds, specs)
    by_topic: dict[str, list[mt.Route]] = {}
    for r in sorted(routes, key=lambda r: r.start):
        by_topic.setdefault(r.topic, []).append(r)
    names = list(attrs.get("joint_names") or [])
    names = names if len(names) == dof else [f"joint{j}" for j in range(dof)]
    latencies = dict(attrs.get("latencies") or {})
    jpeg = {k: _jpeg_options(ds.array(k)) for k in camera_keys(ds)}
    count, prev_stop = 0, None
    seq: dict[str, int] = {}
    with open(out, "wb") as f:
        w = Writer(f)
        schemas = {t: w.register_msgdef(t, d) for t, d in mt.MSGDEFS.items()}
        w.add_metadata(
            mt.METADATA_NAME,
            {"attrs": json.dumps(attrs), "routes": json.dumps([r.to_json() for r in routes])},
        )
        for e in range(ds.n_episodes):
            ep = ds.episode(e, [*specs, *(f"{k}_t" for k in specs)])
            msgs: list[tuple[int, int, str, dict]] = []
            for order, (topic, rs) in enumerate(by_topic.items()):
                image = rs[0].msgtype == mt.COMPRESSED_IMAGE
                lat = mt.to_ns(
                    mt.stream_latency_s(latencies, rs[0].key, mt.camera_name(topic) if image else None)
                )
                last = None
                for i, t in enumerate(ep[f"{rs[0].key}_t"]):
                    if t == last:
                        continue
                    last, ns = t, mt.to_ns(float(t))
                    header = {"stamp": mt.stamp(ns), "frame_id": ""}
                    if image:
                        data = imagecodecs.jpeg_encode(ep[rs[0].key][i], **jpeg.get(rs[0].key, {"level": 90}))
                        msg = {"header": header, "format": "jpeg", "data": bytes(data)}
                    else:
                        pos = np.concatenate([np.ravel(ep[r.key][i]) for r in rs]).astype(float)
                        msg = {
                            "header": header,
                            "name": mt.joint_state_names(topic, routes, names, len(pos)),
                            "position": pos.tolist(),
                            "velocity": [],
                            "effort": [],
                        }
                    msgs.append((ns + lat, order, topic, msg))
            msgs.sort(key=lambda m: (m[0], m[1]))
            if msgs[0][0] < 0:
                raise DatasetError(f"{ds.path}: episode {e} has capture times before 1970 (no MCAP log time)")
            start, stop = max(0, msgs[0][0] - 1000), msgs[-1][0] + 1000  # 1 us around the episode's messages
            if prev_stop is not None and start <= prev_stop:
                raise DatasetError(
                    f"{ds.path}: episode {e} overlaps episode {e - 1} in time (a bag separates episodes by time)"
                )
            prev_stop = stop
            begin = (start, mt.RECORDER_STATUS_TOPIC, {"data": mt.status_json(True, e)}, mt.STRING)
            end = (stop, mt.RECORDER_STATUS_TOPIC, {"data": mt.status_json(False, e + 1)}, mt.STRING)
            samples = [(m[0], m[2], m[3], by_topic[m[2]][0].msgtype) for m in msgs]
            for t_log, topic, msg, schema in [begin, *samples, end]:
                w.write_message(
                    topic,
                    schemas[schema],
                    msg,
                    log_time=t_log,
                    publish_time=t_log,
                    sequence=seq.get(topic, 0),
                )
                seq[topic] = seq.get(topic, 0) + 1
                count += 1
        w.finish()
    return count


def _jpeg_options(arr) -> dict:  # noqa: ANN001 - a zarr array
    """JPEG settings for a camera array's frames that add little loss to what the store already lost.

    A legacy store's frames are JPEGs: its own quality (4:2:0, as stored) re-encodes them almost unchanged.
    A portable store's JPEG XL frames keep full chroma, which 4:2:0 would halve (64x64 renders: max error
    107 at quality 90), so they go out 4:4:4 at quality 95 (max 11, mean 0.5).
    """
    from mimic.data.codecs import JpegCodec, image_quality

    codecs = getattr(arr.metadata, "codecs", None) or ()
    if codecs and isinstance(codecs[0], JpegCodec):
        return {"level": image_quality(arr) or 90}
    return {"level": max(95, image_quality(arr) or 0), "subsampling": "444"}


def _mcap_routes(ds: ReplayDataset, specs: dict) -> tuple[list, int]:
    """The store's routes (`mcap_topics.plan_routes`) and its arm's dof."""
    from mimic.data import mcap_topics as mt

    attrs = ds.attrs
    if "robot0_joint_pos" in specs:
        dof = int(specs["robot0_joint_pos"]["shape"][0])
    else:
        dof = len(attrs.get("joint_names") or [])
    together = "robot0_joint_pos" in specs and "robot0_gripper_width" in specs
    together = together and np.array_equal(ds.read("robot0_joint_pos_t"), ds.read("robot0_gripper_width_t"))
    shapes = {k: (tuple(s["shape"]), s["kind"]) for k, s in specs.items()}
    return mt.plan_routes(shapes, dof, list(attrs.get("cameras") or []), together), dof

"""Read a ROS 2 MCAP bag: its topics and types, metadata, and decoded messages in log-time order.

Decoding uses mcap_ros2's CDR decoder from the definitions the bag carries, so no ROS install is needed.
Every failure is a DatasetError of one line naming the bag (and the topic where one is at fault): a file
that is no MCAP, one cut off mid-record, a topic missing or of another type.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimic.data.dataset import DatasetError


@dataclass
class Bag:
    """What a bag holds before any message is decoded."""

    path: str
    topics: dict[str, str]  # topic -> message type (schema name)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)

    def require(self, topic: str, msgtype: str) -> None:
        """Raise, naming bag and topic, unless `topic` is in the bag with type `msgtype`."""
        have = self.topics.get(topic)
        if have is None:
            raise DatasetError(f"{self.path}: missing topic {topic} ({msgtype})")
        if have != msgtype:
            raise DatasetError(f"{self.path}: topic {topic} has type {have}, expected {msgtype}")


def _fail(path: str, exc: BaseException) -> DatasetError:
    return DatasetError(f"{path}: not a readable MCAP file ({type(exc).__name__}: {exc})".splitlines()[0])


@contextmanager
def _reader(path: str) -> Iterator[Any]:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the generator using it is done
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open ({exc.strerror})") from None
    try:
        try:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
        except Exception as exc:  # mcap raises several types for a foreign file
            raise _fail(path, exc) from None
        yield reader
    finally:
        f.close()


def open_bag(path: str | Path) -> Bag:
    """Topics, types and metadata records; a bag without a summary (recording killed) is scanned instead."""
    path = str(path)
    with _reader(path) as reader:
        try:
            summary = reader.get_summary()
            topics: dict[str, str] = {}
            if summary is not None and summary.channels:
                for ch in summary.channels.values():
                    schema = summary.schemas.get(ch.schema_id)
                    topics[ch.topic] = schema.name if schema else ""
            else:
                for schema, ch, _ in reader.iter_messages(log_time_order=False):
                    topics.setdefault(ch.topic, schema.name if schema else "")
            metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        except DatasetError:
            raise
        except Exception as exc:
            raise _fail(path, exc) from None
    return Bag(path, topics, metadata)


def iter_bag(bag: Bag, topics: list[str]) -> Iterator[tuple[str, int, Any]]:
    """(topic, log time ns, decoded message) of `topics`, in log-time order (arrival order for a live bag)."""
    with _reader(bag.path) as reader:
        it = reader.iter_decoded_messages(topics=topics, log_time_order=True)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise _fail(bag.path, exc) from None
            yield item.channel.topic, item.message.log_time, item.decoded_message


def first_messages(bag: Bag, topics: list[str]) -> dict[str, Any]:
    """The first decoded message of each of `topics` (shapes, joint names); raises for one with no message."""
    found: dict[str, Any] = {}
    for topic, _, msg in iter_bag(bag, topics):
        found.setdefault(topic, msg)
        if len(found) == len(set(topics)):
            break
    for topic in topics:
        if topic not in found:
            raise DatasetError(f"{bag.path}: topic {topic} has no messages")
    return found

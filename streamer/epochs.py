"""Attempt numbers that grow every time a request partition changes hands.

A consumer cannot tell a first delivery from a redelivery after a crash. So each owner of a
partition takes a new epoch — one more than the epoch stored in the group's committed-offset
metadata — and stores it straight back. Answers carry `attempt = request.attempt + epoch`, so a
re-served request always has a higher attempt than anything a previous owner sent, and the
client drops the older attempt's records. Works with static membership, where a restarted
member gets its partitions back without a rebalance. The committed metadata is read through the
group member itself (`GroupConsumer.committed`), so this works on any transport.
"""

from __future__ import annotations

import logging

from streamer.transport import GroupConsumer, OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

_PREFIX = "epoch="


def parse_epoch(metadata: str | None) -> int:
    if metadata and metadata.startswith(_PREFIX):
        try:
            return max(int(metadata[len(_PREFIX) :]), 0)
        except ValueError:
            return 0
    return 0


def format_epoch(epoch: int) -> str:
    return f"{_PREFIX}{epoch}"


class PartitionEpochs:
    def __init__(self) -> None:
        self._epochs: dict[TopicPartition, int] = {}

    def epoch(self, tp: TopicPartition) -> int:
        return self._epochs.get(tp, 0)

    def metadata(self, tp: TopicPartition) -> str:
        return format_epoch(self.epoch(tp))

    def forget(self, tp: TopicPartition) -> None:
        self._epochs.pop(tp, None)

    async def claim(self, consumer: GroupConsumer, partitions: list[TopicPartition]) -> None:
        """Take the next epoch of each newly assigned partition and record it in the group."""
        if not partitions:
            return
        committed = await consumer.committed(partitions)
        missing = [tp for tp in partitions if committed.get(tp) is None]
        starts = await consumer.beginning_offsets(missing) if missing else {}
        offsets = {}
        for tp in partitions:
            meta = committed.get(tp)
            epoch = parse_epoch(meta.metadata if meta is not None else None) + 1
            self._epochs[tp] = epoch
            offset = meta.offset if meta is not None else starts[tp]
            offsets[tp] = OffsetAndMetadata(offset, format_epoch(epoch))
        await consumer.commit(offsets)
        log.info("claimed epochs %s", {f"{tp.topic}:{tp.partition}": om.metadata for tp, om in offsets.items()})

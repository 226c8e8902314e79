"""Consumer groups of the in-memory bus: range assignment, an eager rebalance, committed offsets.

When a member joins or leaves, every member is told at its next poll: first `on_revoked` with all
it held (it may still commit those in the callback; its pauses are dropped, as a Kafka client's
are), then — once every member has revoked, as at a broker's join barrier, so no partition ever
has two owners — `on_assigned` with its new share.
Shares are Kafka's range assignment: per topic, members sorted by id, each a contiguous run of
partitions, the first `n % m` members one more. A newly owned partition starts at the group's
committed offset, else at the beginning (auto_offset_reset="earliest").
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping, Sequence

from aiokafka.errors import CommitFailedError, IllegalStateError

from streamer.transport.memory_log import Positions, TopicLogs
from streamer.transport.protocol import OffsetAndMetadata, RebalanceListener, Record, TopicPartition

_member_ids = itertools.count()


class Group:
    def __init__(self, group_id: str, logs: TopicLogs) -> None:
        self.group_id = group_id
        self.committed: dict[TopicPartition, OffsetAndMetadata] = {}
        self.generation = 0
        self._logs = logs
        self._members: list[MemoryGroupConsumer] = []
        self._plan: dict[int, frozenset[TopicPartition]] | None = None

    def join(self, member: MemoryGroupConsumer) -> None:
        self._members.append(member)
        self._rebalance()

    def leave(self, member: MemoryGroupConsumer) -> None:
        self._members.remove(member)
        self._rebalance()

    def _rebalance(self) -> None:
        self.generation += 1
        self._plan = None
        self._logs.changed.fire()

    async def sync(self, member: MemoryGroupConsumer) -> bool:
        """Do `member`'s part of a pending rebalance; True when it holds a settled share."""
        generation = self.generation
        if member.generation == generation:
            return True
        if member.revoked_in != generation:
            await member.listener.on_revoked(sorted(member.owned))
            member.owned = frozenset()
            member.positions.next.clear()
            member.positions.paused.clear()  # as a broker's client: pauses do not outlive an assignment
            member.revoked_in = generation
            self._logs.changed.fire()
        if generation != self.generation or any(m.revoked_in != generation for m in self._members):
            return False
        if self._plan is None:
            self._plan = self._range_assignment()
        member.owned = self._plan[member.member_id]
        member.generation = generation
        for tp in member.owned:
            committed = self.committed.get(tp)
            member.positions.next[tp] = committed.offset if committed is not None else 0
        await member.listener.on_assigned(sorted(member.owned))
        return member.generation == self.generation

    def _range_assignment(self) -> dict[int, frozenset[TopicPartition]]:
        shares: dict[int, set[TopicPartition]] = {m.member_id: set() for m in self._members}
        topics = sorted({t for m in self._members for t in m.topics})
        for topic in topics:
            members = sorted((m for m in self._members if topic in m.topics), key=lambda m: m.member_id)
            partitions = self._logs.partitions(topic)
            size, extra = divmod(len(partitions), len(members))
            start = 0
            for i, m in enumerate(members):
                end = start + size + (1 if i < extra else 0)
                shares[m.member_id].update(partitions[start:end])
                start = end
        return {member_id: frozenset(tps) for member_id, tps in shares.items()}

    def commit(self, member: MemoryGroupConsumer, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        foreign = [tp for tp in offsets if tp not in member.owned]
        if foreign:
            raise CommitFailedError(f"not owned by this member (rebalanced): {sorted(foreign)}")
        self.committed.update(offsets)


class MemoryGroupConsumer:
    def __init__(self, group: Group, logs: TopicLogs, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.member_id = next(_member_ids)
        self.topics = tuple(topics)
        self.listener = listener
        self.owned: frozenset[TopicPartition] = frozenset()
        self.positions = Positions(logs)
        self.generation = -1  # the group generation whose share it holds
        self.revoked_in = -1  # the generation whose rebalance it has revoked for
        self._group = group
        self._logs = logs
        self._started = False

    async def start(self) -> None:
        self._started = True
        self._group.join(self)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.owned:
            await self.listener.on_revoked(sorted(self.owned))
        self.owned = frozenset()
        self._group.leave(self)

    async def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if not self._started:
            raise IllegalStateError("consumer is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        while True:
            if await self._group.sync(self):
                batch = self.positions.take(max_records)
                if batch:
                    return batch
            if not await self._logs.changed.wait(deadline - loop.time()):
                return {}

    def assignment(self) -> frozenset[TopicPartition]:
        return self.owned

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._logs.end_offset(tp) if tp in self.owned else None

    def pause(self, *tps: TopicPartition) -> None:
        self.positions.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.positions.paused.difference_update(tps)
        self._logs.changed.fire()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.owned:
            raise IllegalStateError(f"{tp} is not assigned")
        self.positions.next[tp] = offset
        self._logs.changed.fire()

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        self._group.commit(self, offsets)

    async def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata | None]:
        return {tp: self._group.committed.get(tp) for tp in tps}

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._logs.end_offset(tp) for tp in tps}

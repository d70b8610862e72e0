"""Batching: when a batch is due, and what it holds. Pure, so it is testable without a broker."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from .events import DeadLetter, Event, TopicPartition

Item = Event | DeadLetter


@dataclass(frozen=True)
class BatchPolicy:
    max_messages: int = 5000
    max_wait_s: float = 0.1

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError("batch size must be at least 1")
        if self.max_wait_s < 0:
            raise ValueError("batch timeout must not be negative")


def source_of(item: Item) -> TopicPartition:
    return (item.topic, item.partition)


@dataclass
class BatchBuffer:
    """Records consumed but not yet committed, in consumption order."""

    policy: BatchPolicy
    items: list[Item] = field(default_factory=list)
    started_at: float | None = None

    def add(self, items: Iterable[Item], now: float) -> None:
        before = len(self.items)
        self.items.extend(items)
        if self.started_at is None and len(self.items) > before:
            self.started_at = now

    def room(self) -> int:
        return max(self.policy.max_messages - len(self.items), 0)

    def is_due(self, now: float) -> bool:
        if not self.items:
            return False
        if len(self.items) >= self.policy.max_messages:
            return True
        return self.started_at is not None and now - self.started_at >= self.policy.max_wait_s

    def time_left(self, now: float) -> float:
        """How long the next poll may wait before the batch falls due."""
        if self.started_at is None:
            return self.policy.max_wait_s
        return max(self.policy.max_wait_s - (now - self.started_at), 0.0)

    def take(self, limit: int | None = None) -> list[Item]:
        """The oldest `limit` records (all by default); the rest stay, their clock running."""
        if limit is None or len(self.items) <= limit:
            items, self.items, self.started_at = self.items, [], None
            return items
        items, self.items = self.items[:limit], self.items[limit:]
        return items

    def drop(self, partitions: Collection[TopicPartition]) -> int:
        """Forget the records of these partitions; returns how many were dropped."""
        if not partitions or not self.items:
            return 0
        kept = [i for i in self.items if source_of(i) not in partitions]
        dropped = len(self.items) - len(kept)
        self.items = kept
        if not kept:
            self.started_at = None
        return dropped


def next_offsets(items: Iterable[Item]) -> dict[TopicPartition, int]:
    """Per partition, the offset to store after committing `items`: last offset + 1."""
    targets: dict[TopicPartition, int] = {}
    for item in items:
        key = source_of(item)
        if item.offset + 1 > targets.get(key, -1):
            targets[key] = item.offset + 1
    return targets


def without(items: Iterable[Item], partitions: Collection[TopicPartition]) -> list[Item]:
    return [i for i in items if source_of(i) not in partitions]

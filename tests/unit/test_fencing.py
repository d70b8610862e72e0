"""The epoch fence: may a commit for a claim proceed, given the offsets row as locked now?"""

from __future__ import annotations

import dataclasses

import pytest

from eos_pipeline.offsets import REPLAY_OWNER_PREFIX, Claim, OffsetRow, Outcome, fence_outcome

ME = "host-a:101:abc123"
OTHER = "host-b:202:def456"


def mine(epoch: int = 3, next_offset: int | None = 40) -> Claim:
    return Claim("orders", 2, epoch, next_offset, ME)


def test_same_epoch_same_offset_is_owned() -> None:
    assert fence_outcome(mine(), OffsetRow(3, 40, ME)) is Outcome.OWNED


def test_same_epoch_both_offsets_unset_is_owned() -> None:
    assert fence_outcome(mine(next_offset=None), OffsetRow(3, None, ME)) is Outcome.OWNED


@pytest.mark.parametrize("row_offset", [0, 39, 41, None])
def test_same_epoch_other_offset_is_reclaimed(row_offset: int | None) -> None:
    assert fence_outcome(mine(), OffsetRow(3, row_offset, ME)) is Outcome.RECLAIM


def test_claim_without_offset_but_row_with_one_is_reclaimed() -> None:
    assert fence_outcome(mine(next_offset=None), OffsetRow(3, 0, ME)) is Outcome.RECLAIM


def test_same_epoch_decides_regardless_of_the_row_owner() -> None:
    # The epoch is what fences; with an equal epoch the owner column is not consulted.
    assert fence_outcome(mine(), OffsetRow(3, 40, OTHER)) is Outcome.OWNED


@pytest.mark.parametrize("epoch", [4, 2])
def test_other_epoch_owned_by_another_consumer_is_lost(epoch: int) -> None:
    assert fence_outcome(mine(), OffsetRow(epoch, 40, OTHER)) is Outcome.LOST


def test_other_epoch_without_owner_is_lost() -> None:
    assert fence_outcome(mine(), OffsetRow(4, 40, None)) is Outcome.LOST


def test_other_epoch_with_our_own_owner_is_reclaimed() -> None:
    assert fence_outcome(mine(), OffsetRow(4, 12, ME)) is Outcome.RECLAIM


@pytest.mark.parametrize("owner", [REPLAY_OWNER_PREFIX, f"{REPLAY_OWNER_PREFIX}ops@host:7"])
def test_other_epoch_reset_by_a_replay_is_reclaimed(owner: str) -> None:
    assert fence_outcome(mine(), OffsetRow(9, 0, owner)) is Outcome.RECLAIM


def test_replay_prefix_must_be_a_prefix() -> None:
    owner = f"host-c:{REPLAY_OWNER_PREFIX}x"
    assert fence_outcome(mine(), OffsetRow(9, 0, owner)) is Outcome.LOST


def test_missing_row_is_reclaimed() -> None:
    assert fence_outcome(mine(), None) is Outcome.RECLAIM


def test_claim_advanced_moves_only_the_offset() -> None:
    c = mine(epoch=7, next_offset=None)
    moved = c.advanced(120)
    assert moved == Claim("orders", 2, 7, 120, ME)
    assert moved.key == ("orders", 2)
    assert c.next_offset is None  # the original is untouched
    assert moved is not c


def test_claim_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine().epoch = 99  # type: ignore[misc]

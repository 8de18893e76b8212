"""lock.redis and sequencer.redis against a private redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest
from layotto.plugin import ComponentError, InvalidArgument, LockStatus, Segment
from layotto_redis import RedisLockStore, RedisSequencerStore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


# -- lock ----------------------------------------------------------------------------------


async def test_try_lock_sets_nx_px(lock: RedisLockStore, prefix: str) -> None:
    key = prefix + "lock"
    assert await lock.try_lock(key, "owner-1", 15) is True
    assert await lock.client.get(key) == b"owner-1"
    assert 14_000 < await lock.client.pttl(key) <= 15_000
    assert await lock.try_lock(key, "owner-1", 15) is False  # not reentrant
    assert await lock.try_lock(key, "owner-2", 15) is False


async def test_unlock(lock: RedisLockStore, prefix: str) -> None:
    key = prefix + "lock"
    assert await lock.unlock(key, "owner-1") is LockStatus.LOCK_UNEXIST
    assert await lock.try_lock(key, "owner-1", 10)
    assert await lock.unlock(key, "owner-2") is LockStatus.LOCK_BELONG_TO_OTHERS
    assert await lock.client.get(key) == b"owner-1"
    assert await lock.unlock(key, "owner-1") is LockStatus.SUCCESS
    assert await lock.client.exists(key) == 0
    assert await lock.try_lock(key, "owner-2", 10)


async def test_keep_alive(lock: RedisLockStore, prefix: str) -> None:
    key = prefix + "lock"
    assert await lock.keep_alive(key, "owner-1", 10) is LockStatus.LOCK_UNEXIST
    assert await lock.client.exists(key) == 0  # not recreated
    assert await lock.try_lock(key, "owner-1", 2)
    assert await lock.keep_alive(key, "owner-2", 100) is LockStatus.LOCK_BELONG_TO_OTHERS
    assert await lock.client.pttl(key) <= 2000
    assert await lock.keep_alive(key, "owner-1", 100) is LockStatus.SUCCESS
    assert 99_000 < await lock.client.pttl(key) <= 100_000


async def test_lock_expires(lock: RedisLockStore, prefix: str) -> None:
    key = prefix + "lock"
    assert await lock.try_lock(key, "owner-1", 1)
    deadline = time.monotonic() + 3
    while not await lock.try_lock(key, "owner-2", 10):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert await lock.keep_alive(key, "owner-1", 10) is LockStatus.LOCK_BELONG_TO_OTHERS


async def test_one_winner_under_contention(lock: RedisLockStore, prefix: str) -> None:
    results = await asyncio.gather(
        *(lock.try_lock(prefix + "hot", f"owner-{i}", 10) for i in range(50))
    )
    assert results.count(True) == 1


@pytest.mark.parametrize(
    ("resource", "owner", "expire"), [("", "o", 1), ("r", "", 1), ("r", "o", 0), ("r", "o", -1)]
)
async def test_lock_validation(
    lock: RedisLockStore, resource: str, owner: str, expire: int
) -> None:
    with pytest.raises(InvalidArgument):
        await lock.try_lock(resource, owner, expire)
    with pytest.raises(InvalidArgument):
        await lock.keep_alive(resource, owner, expire)


async def test_lock_on_a_foreign_key_fails_cleanly(lock: RedisLockStore, prefix: str) -> None:
    await lock.client.hset(prefix + "hash", "f", "v")
    with pytest.raises(ComponentError, match="WRONGTYPE"):
        await lock.unlock(prefix + "hash", "o")


# -- sequencer -----------------------------------------------------------------------------


async def test_next_id_incr(sequencer: RedisSequencerStore, prefix: str) -> None:
    key = prefix + "seq"
    assert [await sequencer.next_id(key) for _ in range(3)] == [1, 2, 3]
    assert await sequencer.client.get(key) == b"3"
    assert await sequencer.next_id(prefix + "other") == 1


async def test_segments(sequencer: RedisSequencerStore, prefix: str) -> None:
    key = prefix + "seg"
    assert sequencer.supports_segments is True
    assert await sequencer.next_segment(key, 100) == Segment(1, 100)
    assert await sequencer.next_id(key) == 101
    assert await sequencer.next_segment(key, 10) == Segment(102, 111)
    assert await sequencer.client.get(key) == b"111"
    with pytest.raises(InvalidArgument):
        await sequencer.next_segment(key, 0)


async def test_unique_under_concurrency(sequencer: RedisSequencerStore, prefix: str) -> None:
    key = prefix + "many"

    async def worker() -> list[int]:
        return [await sequencer.next_id(key) for _ in range(40)]

    ids = [i for chunk in await asyncio.gather(*(worker() for _ in range(25))) for i in chunk]
    assert sorted(ids) == list(range(1, 1001))


async def test_ensure_bigger_than(sequencer: RedisSequencerStore, prefix: str) -> None:
    low, high = prefix + "low", prefix + "high"
    await sequencer.ensure_bigger_than(low, 1000)  # counter absent
    assert await sequencer.next_id(low) == 1001
    await sequencer.client.set(high, 5000)
    await sequencer.ensure_bigger_than(high, 1000)  # already above: unchanged
    assert await sequencer.next_id(high) == 5001
    await sequencer.ensure_bigger_than(high, 5001)  # equal: unchanged
    assert await sequencer.next_id(high) == 5002


async def test_ensure_bigger_than_is_exact_for_int64(
    sequencer: RedisSequencerStore, prefix: str
) -> None:
    key = prefix + "big"
    big = 2**62 + 1  # not representable as a double
    await sequencer.ensure_bigger_than(key, big)
    assert await sequencer.next_id(key) == big + 1
    await sequencer.ensure_bigger_than(key, big)  # smaller now: unchanged
    assert await sequencer.next_id(key) == big + 2
    await sequencer.ensure_bigger_than(prefix + "neg", -5)
    assert await sequencer.next_id(prefix + "neg") == 1


async def test_bigger_than_on_garbage_fails(sequencer: RedisSequencerStore, prefix: str) -> None:
    await sequencer.client.set(prefix + "junk", "abc")
    with pytest.raises(ComponentError, match="not an integer"):
        await sequencer.ensure_bigger_than(prefix + "junk", 10)
    with pytest.raises(ComponentError):
        await sequencer.next_id(prefix + "junk")


async def test_sequencer_validation(sequencer: RedisSequencerStore) -> None:
    with pytest.raises(InvalidArgument):
        await sequencer.next_id("")

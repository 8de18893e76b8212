"""pubsub.redis under failures, end to end (`layotto run` subprocesses, a real app server):

- SIGKILL the sidecar while 1,000 messages are published and delivered, restart it: every
  acknowledged publish reaches the app at least once (duplicates are counted and reported);
- SIGKILL and restart Redis mid-stream (a durable, fsync-always server): publishing fails fast
  with UNAVAILABLE, readiness goes DOWN and comes back, and nothing acknowledged is lost.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest
from layotto.testing.pubsub_reliability import broker_outage, sigkill_during_traffic
from layotto_redis_test_support import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(240)]


def write_config(tmp_path: Path, server: RedisServer) -> Path:
    path = tmp_path / "layotto.yaml"
    path.write_text(
        f"""
app: {{id: reliability}}
pubsub: {{retry_initial_interval: 0.05, retry_max_interval: 1.0}}
components:
  - name: pubsub
    type: pubsub.redis
    metadata:
      redisHost: "{server.address}"
      processingTimeout: 5s
      redeliverInterval: 1s
"""
    )
    return path


async def test_sigkill_of_the_sidecar_loses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = write_config(tmp_path, redis_server)
    report = await sigkill_during_traffic(
        ["--config", str(config)], "pubsub", f"kill-{uuid.uuid4().hex[:8]}", total=1000
    )
    print(f"\nredis sidecar SIGKILL: {report}")
    assert report.published == 1000
    assert report.lost == [], f"{len(report.lost)} acknowledged messages never arrived"
    # The kill came mid-traffic: some published and delivered, more to publish after it.
    assert report.arrived_at_kill >= 100
    assert report.published_at_kill < 1000


async def test_broker_outage_fails_fast_and_loses_nothing(
    tmp_path: Path, durable_redis_server: RedisServer
) -> None:
    server = durable_redis_server
    config = write_config(tmp_path, server)

    async def stop() -> None:
        await anyio.to_thread.run_sync(server.stop)

    async def start() -> None:
        await anyio.to_thread.run_sync(server.start)

    report = await broker_outage(
        ["--config", str(config)], "pubsub", f"outage-{uuid.uuid4().hex[:8]}", stop, start
    )
    print(f"\nredis broker outage: {report}")
    assert report.lost == [], f"{len(report.lost)} acknowledged messages never arrived"
    assert report.publish_failure_codes == ["UNAVAILABLE"] * 5
    assert report.slowest_failed_publish < 2.0
    assert report.readiness_down_after < 5.0
    assert report.readiness_up_after < 10.0

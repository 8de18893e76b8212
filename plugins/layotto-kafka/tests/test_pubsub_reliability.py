"""pubsub.kafka under failures, end to end (`layotto run` subprocesses, a real app server):

- SIGKILL the sidecar while 1,000 messages are published and delivered, restart it: every
  acknowledged publish reaches the app at least once (duplicates are counted and reported);
- the broker goes down mid-stream and comes back (the mock cluster keeps its log): publishing
  fails fast with UNAVAILABLE, readiness goes DOWN and comes back, nothing acknowledged is lost.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from layotto.testing.pubsub_reliability import broker_outage, sigkill_during_traffic
from layotto_kafka.testing import MockKafkaCluster
from layotto_kafka_test_support import FAST_GROUP, Names

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(240)]


def write_config(tmp_path: Path, bootstrap: str, group: str) -> Path:
    metadata = "\n".join(
        f"      {k}: {v!r}"
        for k, v in {"brokers": bootstrap, "consumerGroup": group, **FAST_GROUP}.items()
    )
    path = tmp_path / "layotto.yaml"
    path.write_text(
        f"""
app: {{id: reliability}}
pubsub: {{retry_initial_interval: 0.05, retry_max_interval: 1.0}}
components:
  - name: pubsub
    type: pubsub.kafka
    metadata:
{metadata}
"""
    )
    return path


async def test_sigkill_of_the_sidecar_loses_nothing(
    tmp_path: Path, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    config = write_config(tmp_path, mock_cluster.bootstrap, names("group"))
    report = await sigkill_during_traffic(
        ["--config", str(config)], "pubsub", names("kill"), total=1000
    )
    print(f"\nkafka sidecar SIGKILL: {report}")
    assert report.published == 1000
    assert report.lost == [], f"{len(report.lost)} acknowledged messages never arrived"
    assert report.arrived_at_kill >= 100
    assert report.published_at_kill < 1000


async def test_broker_outage_fails_fast_and_loses_nothing(
    tmp_path: Path, own_mock_cluster: MockKafkaCluster, names: Names
) -> None:
    cluster = own_mock_cluster
    config = write_config(tmp_path, cluster.bootstrap, names("group"))

    async def down() -> None:
        await anyio.to_thread.run_sync(cluster.broker_down)

    async def up() -> None:
        await anyio.to_thread.run_sync(cluster.broker_up)

    report = await broker_outage(["--config", str(config)], "pubsub", names("outage"), down, up)
    print(f"\nkafka broker outage: {report}")
    assert report.lost == [], f"{len(report.lost)} acknowledged messages never arrived"
    assert report.publish_failure_codes == ["UNAVAILABLE"] * 5
    assert report.slowest_failed_publish < 2.0
    assert report.readiness_down_after < 5.0
    assert report.readiness_up_after < 10.0

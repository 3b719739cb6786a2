from __future__ import annotations

import dask
from distributed import Client

from imagery.execute import LOCAL_CLUSTER_CONFIG, local_cluster, local_cluster_started


def test_local_cluster_is_sized_and_memory_bounded() -> None:
    with local_cluster(workers=2, memory_per_worker="512MiB") as cluster:
        (worker,) = cluster.workers.values()
        assert worker.state.nthreads == 2
        assert worker.memory_manager.memory_limit == 512 * 2**20


def test_local_cluster_runs_without_profiler_or_stealing_and_leaves_the_config_alone() -> None:
    config = {name: dask.config.get(name) for name in LOCAL_CLUSTER_CONFIG}
    with local_cluster(workers=1) as cluster:
        (worker,) = cluster.workers.values()
        assert "profile" not in worker.periodic_callbacks
        assert "stealing" not in cluster.scheduler.extensions
        assert worker.periodic_callbacks["tick"].callback_time == 500
        assert cluster.scheduler.periodic_callbacks["tick"].callback_time == 500
    assert {name: dask.config.get(name) for name in LOCAL_CLUSTER_CONFIG} == config
    assert config["distributed.worker.profile.enabled"] is True  # Dask's default, for other clusters


def test_a_cluster_started_in_the_background_runs_tasks_and_is_closed_with_the_block() -> None:
    with local_cluster_started(workers=1, memory_per_worker="512MiB") as starting:
        cluster = starting.result()
        (worker,) = cluster.workers.values()
        assert worker.memory_manager.memory_limit == 512 * 2**20
        assert "profile" not in worker.periodic_callbacks
        with Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result() == 3
    assert cluster.status.name == "closed"

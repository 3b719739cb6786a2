from __future__ import annotations

from imagery.execute import local_cluster


def test_local_cluster_is_sized_and_memory_bounded() -> None:
    with local_cluster(workers=2, memory_per_worker="512MiB") as cluster:
        (worker,) = cluster.workers.values()
        assert worker.state.nthreads == 2
        assert worker.memory_manager.memory_limit == 512 * 2**20

"""Store shards on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and
worker nodes with fractional CPUs): each shard is pinned to the node whose disk holds its
segments, recorded in store.json; it comes back there after a kill; a lost node is an
error naming shard, node and directory, never a hang."""

from __future__ import annotations

import json
import shutil
import uuid

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

import helpers_store
from helpers_store import assert_traj_equal, family_lookup, make_traj
from relabel_service.store import shard_dir, shard_for
from relabel_service.store.actor import StoreShardLostError, start_store

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.cloudpickle.register_pickle_by_value(helpers_store)  # the family lookup travels to the shards
    yield c, worker
    ray.shutdown()
    c.shutdown()


def _node_of(handle) -> str:
    return ray.get(handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), timeout=120)


def _start(root, prefix, **kw):
    return start_store(root, 2, fsync="never", name_prefix=prefix, family_lookup=family_lookup, **kw)


def _on_shard(trajs, s):
    return [t for t in trajs if shard_for(t.episode_id, 2) == s]


def test_shards_stay_on_their_recorded_node_across_kills_and_restarts(cluster, tmp_path) -> None:
    c, worker = cluster
    head = ray.get_runtime_context().get_node_id()
    prefix = f"c-{uuid.uuid4().hex[:8]}"
    store = _start(tmp_path, prefix, shard_nodes={1: worker.node_id})
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["shared_filesystem"] is False
    assert {k: v["node_id"] for k, v in meta["nodes"].items()} == {"0": head, "1": worker.node_id}
    assert _node_of(store.shards[0]) == head and _node_of(store.shards[1]) == worker.node_id
    rng = np.random.default_rng(0)
    trajs = [make_traj(rng, i) for i in range(40)]
    store.append_many(trajs[:20])
    ray.kill(store.shards[1], no_restart=False)  # the process dies; Ray restarts it ...
    store.append_many(trajs[20:])
    assert _node_of(store.shards[1]) == worker.node_id  # ... on the node that holds its files
    store.shutdown()
    again = _start(tmp_path, prefix)  # a new start follows store.json, not the caller's node
    assert _node_of(again.shards[1]) == worker.node_id
    got, _ = again.read_new(None, max_per_shard=1000)
    by_id = {t.episode_id: t for t in got}
    assert len(by_id) == 40
    for t in trajs:
        assert_traj_equal(by_id[t.episode_id], t)
    again.shutdown()


@pytest.mark.timeout(300)
def test_a_shard_whose_node_leaves_is_an_error_naming_it(cluster, tmp_path) -> None:
    c, _ = cluster
    doomed = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    store = _start(tmp_path, f"c-{uuid.uuid4().hex[:8]}", shard_nodes={1: doomed.node_id})
    store.timeout_s = 60.0
    rng = np.random.default_rng(1)
    trajs = [make_traj(rng, i) for i in range(10)]
    store.append_many(trajs)
    c.remove_node(doomed)
    with pytest.raises(StoreShardLostError) as err:
        store.append_many(_on_shard([make_traj(rng, i) for i in range(10, 30)], 1))
    msg = str(err.value)
    assert "store shard 1" in msg and doomed.node_id in msg and str(shard_dir(tmp_path, 1)) in msg
    ray.kill(store.shards[0], no_restart=True)
    # a new start: the node is gone and the directory is not readable here -> the same error
    shutil.move(shard_dir(tmp_path, 1), tmp_path / "elsewhere")
    with pytest.raises(StoreShardLostError, match=f"store shard 1 .* node {doomed.node_id}"):
        _start(tmp_path, f"c-{uuid.uuid4().hex[:8]}")
    # readable here after all (e.g. copied over): the shard is pinned to this node instead
    shutil.move(tmp_path / "elsewhere", shard_dir(tmp_path, 1))
    back = _start(tmp_path, f"c-{uuid.uuid4().hex[:8]}")
    head = ray.get_runtime_context().get_node_id()
    assert json.loads((tmp_path / "store.json").read_text())["nodes"]["1"]["node_id"] == head
    assert back.stats()["records"] == 10
    back.shutdown()


def test_a_shard_that_cannot_be_placed_on_its_node_is_an_error_not_a_wait(cluster, tmp_path) -> None:
    _, worker = cluster
    with pytest.raises(RuntimeError, match=f"could not be placed; each needs num_cpus=2 .* shard 1 -> node {worker.node_id}"):
        _start(tmp_path, f"c-{uuid.uuid4().hex[:8]}", shard_nodes={1: worker.node_id}, num_cpus=2, timeout_s=5.0)


def test_shared_filesystem_pins_nothing(cluster, tmp_path) -> None:
    store = _start(tmp_path, f"c-{uuid.uuid4().hex[:8]}", pin_to_node=False)
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["shared_filesystem"] is True and "nodes" not in meta
    assert all(node is None for node, _ in store.placement.values())
    store.shutdown()

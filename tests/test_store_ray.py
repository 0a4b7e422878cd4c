"""The store on a real local Ray: routing, streaming reads, and a shard killed mid-run."""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid

import numpy as np
import pytest
import ray

import helpers_store
from actors.priority import thread_priorities
from helpers_store import assert_traj_equal, family_lookup, make_traj
from relabel_service.store import codec, tools
from relabel_service.store import shard_dir, shard_for
from relabel_service.store.actor import TrajectoryStore, start_store

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    # address="local": never join another Ray instance running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # tests/ is not on the workers' path: the family lookup travels by value to the shards
    ray.cloudpickle.register_pickle_by_value(helpers_store)
    yield
    ray.shutdown()


def _start(root, name_prefix: str | None = None, **kw) -> TrajectoryStore:
    kw.setdefault("fsync", "interval")
    name_prefix = name_prefix or f"test-{uuid.uuid4().hex[:8]}"  # actors are found by name
    return start_store(root, 2, name_prefix=name_prefix, family_lookup=family_lookup, **kw)


def _read_everything(store: TrajectoryStore, page: int = 16) -> list:
    out, cursors = [], None
    while True:
        trajs, cursors = store.read_new(cursors, max_per_shard=page)
        if not trajs:
            return out
        out += trajs


def test_shard_killed_mid_run_restarts_from_its_segments(ray_session, tmp_path) -> None:
    store = _start(tmp_path, segment_bytes=4096, cpu_priority="idle")
    rng = np.random.default_rng(0)
    trajs = [make_traj(rng, i) for i in range(120)]
    acked: dict[str, object] = {}
    for i in range(0, 120, 4):
        if i == 60:
            assert any(shard_for(t.episode_id, 2) == 0 for t in trajs[:60])
            ray.kill(store.shards[0], no_restart=False)  # the process dies; Ray restarts it
        if i % 8:
            for t, a in zip(trajs[i : i + 4], store.append_many(trajs[i : i + 4])):
                acked[t.episode_id] = a
        else:
            for t in trajs[i : i + 4]:
                acked[t.episode_id] = store.append(t)
    assert len(acked) == 120
    got = {t.episode_id: t for t in _read_everything(store)}
    for t in trajs:
        assert_traj_equal(got[t.episode_id], t)  # every acknowledged trajectory is readable
        assert acked[t.episode_id].shard == shard_for(t.episode_id, 2)
    st = store.stats()
    assert st["records"] == 120
    assert st["shards"][0]["recovery"]["records"] > 0  # shard 0 rebuilt its index from disk
    assert st["shards"][0]["recovery"]["ok"]
    assert tools.verify(tmp_path, family_lookup=family_lookup).ok
    if sys.platform.startswith("linux"):  # the restarted shard runs __init__ again: idle again
        policies = ray.get(store.shards[0].__ray_call__.remote(lambda self: {p for _, p in thread_priorities()}))
        assert policies == {"idle"}


def test_streaming_cursors_and_queries(ray_session, tmp_path) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    store = _start(tmp_path, prefix)
    rng = np.random.default_rng(1)
    first = [make_traj(rng, i) for i in range(20)]
    store.append_many(first)
    trajs, cursors = store.read_new(None, max_per_shard=100)
    assert sorted(t.episode_id for t in trajs) == sorted(t.episode_id for t in first)
    assert store.read_new(cursors)[0] == []
    more = [make_traj(rng, i) for i in range(20, 26)]
    store.append_many(more)
    new, _ = store.read_new(cursors)
    assert sorted(t.episode_id for t in new) == sorted(t.episode_id for t in more)
    assert [t.episode_id for t in store.recent(3)] == [t.episode_id for t in more[-3:]]
    # the objects a caller holds come back as themselves (not decoded again), the rest decoded
    held = {t.episode_id: t for t in more[-2:]}
    back = store.recent(3, held=held)
    assert [t.episode_id for t in back] == [t.episode_id for t in more[-3:]]
    assert back[1] is more[-2] and back[2] is more[-1] and back[0] is not more[-3]
    assert_traj_equal(back[0], more[-3])
    assert store.recent(0, held=held) == []
    a, b = store.sample(7, seed=5), store.sample(7, seed=5)
    assert [t.episode_id for t in a] == [t.episode_id for t in b] and len({t.episode_id for t in a}) == 7
    assert len(store.sample(1000, seed=0)) == 26
    assert not trajs[0].obs.flags.writeable  # zero-copy views of the received bytes
    same = TrajectoryStore.connect(tmp_path, name_prefix=prefix, family_lookup=family_lookup)
    assert same.stats()["records"] == 26


def test_invalid_trajectories_are_refused_before_sending(ray_session, tmp_path) -> None:
    store = _start(tmp_path)
    good = make_traj(np.random.default_rng(2), 1, T=6, episode_id="w0-e3")
    rewards = good.rewards.copy()
    rewards[4] = np.nan
    with pytest.raises(codec.InvalidTrajectoryError, match="trajectory w0-e3: field 'rewards' contains NaN at step 4"):
        store.append(dataclasses.replace(good, rewards=rewards))
    with pytest.raises(codec.InvalidTrajectoryError, match="unknown family 'no_such_family'"):
        store.append_many([good, dataclasses.replace(good, episode_id="w0-e4", family="no_such_family")])
    assert store.stats()["records"] == 0  # one bad trajectory sends nothing
    with pytest.raises(ValueError, match="has 2 shards"):
        start_store(tmp_path, 3)
    assert shard_dir(tmp_path, 1).is_dir()


def test_the_shard_actor_validates_what_reaches_it_directly(ray_session, tmp_path) -> None:
    store = _start(tmp_path)
    good = make_traj(np.random.default_rng(5), 1, T=6, episode_id="w0-e5")
    s = shard_for(good.episode_id, 2)
    actor = store.shards[s]  # a writer that skips the client's check
    rewards = good.rewards.copy()
    rewards[2] = np.nan
    cases = [
        (dataclasses.replace(good, rewards=rewards), "field 'rewards' contains NaN at step 2"),
        (dataclasses.replace(good, obs=np.zeros((7, 5), np.float32)), "field 'obs'"),
        (dataclasses.replace(good, family="no_such_family"), "field 'family': unknown family 'no_such_family'"),
    ]
    for bad, message in cases:
        with pytest.raises(codec.InvalidTrajectoryError, match=f"shard {s} refused trajectory w0-e5: {message}"):
            ray.get(actor.append.remote(codec.encode(bad)))
        with pytest.raises(codec.InvalidTrajectoryError, match=message):  # one bad record refuses the batch
            ray.get(actor.append_many.remote([codec.encode(good), codec.encode(bad)]))
    with pytest.raises(codec.InvalidTrajectoryError, match=f"shard {s}: record is not an encoded trajectory"):
        ray.get(actor.append.remote(b"\x00garbage"))
    assert ray.get(actor.count.remote()) == 0  # nothing was written
    assert ray.get(actor.append.remote(codec.encode(good))).seq == 0


@ray.remote(num_cpus=0.1)
def _append_from_a_task(store: TrajectoryStore, trajs: list) -> list:
    return store.append_many(trajs)


def test_the_client_travels_to_other_actors_and_tasks(ray_session, tmp_path) -> None:
    store = _start(tmp_path)
    trajs = [make_traj(np.random.default_rng(3), i) for i in range(6)]
    acks = ray.get(_append_from_a_task.remote(store, trajs))  # e.g. a rollout worker holding the client
    assert sorted(a.seq for a in acks if a.shard == 0) == list(range(sum(a.shard == 0 for a in acks)))
    assert sorted(t.episode_id for t in store.read_new()[0]) == sorted(t.episode_id for t in trajs)


def test_dict_cursors_shutdown_and_reopen(ray_session, tmp_path) -> None:
    store = start_store(tmp_path, 2, family_lookup=family_lookup)  # default names derive from the dir
    trajs = [make_traj(np.random.default_rng(4), i) for i in range(12)]
    store.append_many(trajs)
    on_1 = [t.episode_id for t in trajs if shard_for(t.episode_id, 2) == 1]
    got, cursors = store.read_new({1: 0}, max_per_shard=100)  # a relabel worker owning shard 1
    assert [t.episode_id for t in got] == on_1 and cursors == {1: len(on_1)}
    assert store.stats()["trajectories"] == 12
    assert TrajectoryStore.connect(tmp_path, family_lookup=family_lookup).stats()["records"] == 12
    with pytest.raises(ValueError, match="already serves"):
        start_store(tmp_path / "other", 2, name_prefix=store_name_prefix(tmp_path))
    store.shutdown()
    again = start_store(tmp_path, 2, family_lookup=family_lookup)
    st = again.stats()
    assert st["records"] == 12 and all(s["recovery"]["ok"] for s in st["shards"])
    assert sorted(t.episode_id for t in again.read_new()[0]) == sorted(t.episode_id for t in trajs)
    again.shutdown()


def store_name_prefix(root) -> str:
    from relabel_service.store.actor import default_name_prefix

    return default_name_prefix(root)


@pytest.mark.slow  # two short trainings (~1-2 min on 2 busy cores)
@pytest.mark.timeout(900)  # before the seq floor this resume waited forever
def test_resume_after_on_disk_damage_finishes_and_reports_the_loss(ray_session, tmp_path, caplog) -> None:
    import json
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hindsight.config import load_config
    from hindsight.trainer import STATE_FILE, Trainer
    from relabel_service.store.segments import list_segments, scan_segment

    cfg = load_config("smoke", [f"logdir={tmp_path}", "env_steps=500", "relabel.strategy=none"])
    first = Trainer(cfg, progress=False).run()
    run_dir = Path(first["run_dir"])
    cursors = json.loads((run_dir / STATE_FILE).read_text())["cursors"]
    store_dir = run_dir / "store"
    # shard 0: its last record cut mid-way (the saved relabel cursor is past it)
    seg0 = list_segments(shard_dir(store_dir, 0))[-1][1]
    scan = scan_segment(0, seg0)
    assert int(cursors["0"]) == scan.end_seq  # everything stored was delivered
    os.truncate(seg0, seg0.stat().st_size - 10)
    # shard 1: one flipped byte inside its first record
    seg1 = list_segments(shard_dir(store_dir, 1))[0][1]
    data = bytearray(seg1.read_bytes())
    data[scan_segment(0, seg1).frames[0][0] + 20] ^= 0xFF
    seg1.write_bytes(bytes(data))

    with caplog.at_level("WARNING", logger="hindsight.trainer"):
        resumed = Trainer(load_config(str(run_dir / "config.yaml"), ["env_steps=1000"]), run_dir=run_dir,
                          resume=True, progress=False).run()
    assert resumed["env_steps"] >= 1000  # it finished: every new record was read and relabeled
    lines = [r.getMessage() for r in caplog.records if r.name == "hindsight.trainer" and r.levelname == "WARNING"]
    damaged = [m for m in lines if "recovery found" in m]
    assert len(damaged) == 2, lines  # one line per damaged shard
    assert any("store shard 0" in m and "torn_tail" in m for m in damaged)
    assert any("store shard 1" in m and "crc_mismatch" in m and "1 record(s) known lost" in m for m in damaged)
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert acc.Scalars("store/recovered_dropped_records")[-1].value == 2  # shard 0's cut record + shard 1's
    assert acc.Scalars("store/recovered_dropped_bytes")[-1].value > 0
    report = tools.verify(store_dir)
    assert not report.ok and {p.kind for _, p in report.problems} == {"dropped_file"}


def test_a_store_from_an_earlier_ray_session_follows_its_directory(ray_session, tmp_path, caplog) -> None:
    import json

    store = _start(tmp_path)
    store.append_many([make_traj(np.random.default_rng(6), i) for i in range(8)])
    store.shutdown()
    meta = json.loads((tmp_path / "store.json").read_text())
    here = ray.get_runtime_context().get_node_id()
    assert {v["node_id"] for v in meta["nodes"].values()} == {here}
    for v in meta["nodes"].values():
        v["node_id"] = "ab" * 28  # node ids change when Ray restarts; the machine (ip) does not
    (tmp_path / "store.json").write_text(json.dumps(meta))
    with caplog.at_level("INFO", logger="relabel_service.store.actor"):
        again = _start(tmp_path)
    assert again.stats()["records"] == 8
    assert {v["node_id"] for v in json.loads((tmp_path / "store.json").read_text())["nodes"].values()} == {here}
    moved = [r for r in caplog.records if "readable on this node" in r.getMessage()]
    assert len(moved) == 2 and all(r.levelname == "INFO" for r in moved)  # the same machine: not a warning
    again.shutdown()

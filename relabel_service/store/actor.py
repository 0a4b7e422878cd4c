"""The trajectory store's Ray edge: shard actors, and the client that routes to them.

    store = start_store("/data/run1/store", num_shards=4, fsync="interval")
    ack = store.append(traj)                            # validated here, routed by shard_for
    trajs, cursors = store.read_new(cursors)            # new trajectories from every shard
    store = TrajectoryStore.connect("/data/run1/store")  # elsewhere: find the actors by name

Each shard is a plain ``store.Shard`` wrapped by ``ray.remote`` (``ShardActor``) with
``max_restarts=-1``: when its process dies Ray re-creates it with the same arguments and
the Shard rebuilds its index from its directory. Only bytes cross the actor boundary
(encoded records in, encoded records out), never pickled Trajectory objects.

Retries: calls are retried by Ray across restarts (``max_task_retries=-1``) and by the
client on ``RayActorError``. That is safe because reads are pure and appends are
idempotent per episode id (a shard that already holds the id returns the first copy's ack).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.priority import background
from relabel_service.store import codec
from relabel_service.core import Trajectory
from relabel_service.store.segments import DEFAULT_SEGMENT_BYTES, STORE_META, Ack, FsyncPolicy, shard_dir, shard_for
from relabel_service.store.shard import Shard

log = logging.getLogger(__name__)

#: Ray restarts a shard whose process died (max_restarts -1), on its node, with the same arguments
SHARD_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0.05, "max_restarts": -1, "max_task_retries": -1}
ShardActor = ray.remote(**SHARD_ACTOR_OPTIONS)(Shard)
#: what a call to a shard whose process died raises (unschedulable: its pinned node is gone)
_ACTOR_GONE: tuple[type[BaseException], ...] = (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError)
#: per-shard cursors: one per shard in order, or {shard: cursor} for some shards
Cursors = Union[list[int], dict[int, int]]


def default_name_prefix(root_dir: str | os.PathLike) -> str:
    """Actor names derive from the store's directory, so two stores never share actors."""
    return f"hindsight-store-{zlib.crc32(str(Path(root_dir).resolve()).encode()):08x}"


def shard_actor_name(name_prefix: str, shard: int) -> str:
    return f"{name_prefix}-shard-{shard}"


class TrajectoryStore:
    """Client of S shard actors. Plain object: create it in any process that can reach Ray.

    ``family_lookup``: family name -> object with obs_dim/action_dim/task_dim/
    reward_input_dim, raising KeyError for unknown names (default ``envs.get_family``);
    used by ``codec.validate`` before anything is sent.
    """

    def __init__(
        self,
        shards: Sequence[Any],
        *,
        family_lookup: Callable[[str], Any] | None = None,
        timeout_s: float | None = 120.0,
        retries: int = 5,
        placement: Mapping[int, tuple[str | None, str]] | None = None,
    ):
        if not shards:
            raise ValueError("a TrajectoryStore needs at least one shard actor")
        self.shards = list(shards)
        # shard -> (node id it is pinned to or None, its directory): names a lost node
        self.placement = {int(k): (v[0], str(v[1])) for k, v in (placement or {}).items()}
        self.timeout_s = timeout_s
        self.retries = retries
        self._family_lookup = family_lookup
        self._lookup = self._cached_lookup(family_lookup)
        self._recoveries: dict[tuple[int, float], tuple[int, int]] = {}  # see recovery_losses

    @staticmethod
    def _cached_lookup(family_lookup: Callable[[str], Any] | None) -> Callable[[str], Any] | None:
        lookup = family_lookup or codec.default_family_lookup()
        return functools.lru_cache(maxsize=None)(lookup) if lookup is not None else None

    def __getstate__(self) -> dict[str, Any]:
        # the client travels to rollout workers; its family cache is rebuilt there
        return {k: v for k, v in self.__dict__.items() if k != "_lookup"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lookup = self._cached_lookup(self._family_lookup)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @classmethod
    def connect(
        cls,
        root_dir: str | os.PathLike,
        *,
        name_prefix: str | None = None,
        namespace: str | None = None,
        **kwargs: Any,
    ) -> "TrajectoryStore":
        """The client of running shard actors (started by ``start_store`` on ``root_dir``)."""
        meta = json.loads((Path(root_dir) / STORE_META).read_text())
        name_prefix = name_prefix or default_name_prefix(root_dir)
        handles = [
            ray.get_actor(shard_actor_name(name_prefix, i), namespace=namespace)
            for i in range(meta["num_shards"])
        ]
        nodes = meta.get("nodes", {})
        placement = {
            i: ((nodes.get(str(i)) or {}).get("node_id"), str(shard_dir(root_dir, i))) for i in range(meta["num_shards"])
        }
        kwargs.setdefault("placement", placement)
        return cls(handles, **kwargs)

    # ---- calls with retry ---------------------------------------------------------------
    def _gather(self, calls: Sequence[tuple[int, str, tuple]]) -> list[Any]:
        """Run (shard, method, args) calls concurrently; retry those whose actor died."""
        refs = [getattr(self.shards[s], m).remote(*a) for s, m, a in calls]
        out = []
        for (s, m, a), ref in zip(calls, refs):
            for attempt in range(self.retries + 1):
                try:
                    out.append(ray.get(ref, timeout=self.timeout_s))
                    break
                except (_ACTOR_GONE + (ray.exceptions.GetTimeoutError,)) as exc:
                    self._check_node(s, exc)  # a shard pinned to a node that left: say so, now
                    if attempt == self.retries or not isinstance(exc, ray.exceptions.RayActorError):
                        raise
                    log.warning("store shard %d: %s failed (%s); retrying", s, m, type(exc).__name__)
                    time.sleep(min(0.1 * 2**attempt, 2.0))
                    ref = getattr(self.shards[s], m).remote(*a)
        return out

    def _check_node(self, shard: int, exc: BaseException) -> None:
        node, directory = self.placement.get(shard, (None, ""))
        if node is not None and node not in alive_nodes():
            raise StoreShardLostError(shard, node, directory) from exc

    # ---- writes ---------------------------------------------------------------------------
    def encode(self, traj: Trajectory) -> bytes:
        """Validate (codec.validate, naming the bad field) and encode."""
        codec.validate(traj, lookup=self._lookup)
        return codec.encode(traj)

    def append(self, traj: Trajectory) -> Ack:
        """Validate, encode, send to shard_for(episode_id); the ack once it is written."""
        payload = self.encode(traj)
        return self._gather([(shard_for(traj.episode_id, self.num_shards), "append", (payload,))])[0]

    def append_many(self, trajs: Sequence[Trajectory]) -> list[Ack]:
        """Validate all first (one bad trajectory sends nothing), then one call per shard."""
        payloads = [self.encode(t) for t in trajs]
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(trajs):
            groups.setdefault(shard_for(t.episode_id, self.num_shards), []).append(i)
        calls = [(s, "append_many", ([payloads[i] for i in idx],)) for s, idx in groups.items()]
        acks: list[Ack | None] = [None] * len(trajs)
        for idx, shard_acks in zip(groups.values(), self._gather(calls)):
            for i, ack in zip(idx, shard_acks):
                acks[i] = ack
        return acks  # type: ignore[return-value]

    # ---- reads ----------------------------------------------------------------------------
    def read_new_raw(
        self, cursors: Cursors | None = None, max_per_shard: int = 256, max_bytes_per_shard: int | None = None
    ) -> tuple[list[bytes], Cursors]:
        """Encoded records after the cursors (shard order) and the new cursors; see read_new."""
        if cursors is None:
            cursors = [0] * self.num_shards
        if isinstance(cursors, Mapping):
            items = [(int(s), int(c)) for s, c in cursors.items()]
        else:
            items = list(enumerate(int(c) for c in cursors))
            if len(items) != self.num_shards:
                raise ValueError(f"expected {self.num_shards} cursors (one per shard), got {len(items)}")
        for s, _ in items:
            if not 0 <= s < self.num_shards:
                raise ValueError(f"no shard {s}: the store has shards 0..{self.num_shards - 1}")
        replies = self._gather([(s, "read", (c, max_per_shard, max_bytes_per_shard)) for s, c in items])
        payloads = [p for recs, _ in replies for p in recs]
        new = {s: cur for (s, _), (_, cur) in zip(items, replies)}
        return payloads, (new if isinstance(cursors, Mapping) else [new[s] for s in range(self.num_shards)])

    def read_new(
        self, cursors: Cursors | None = None, max_per_shard: int = 256, max_bytes_per_shard: int | None = None
    ) -> tuple[list[Trajectory], Cursors]:
        """Trajectories after the cursors (decoded zero-copy: read-only arrays), new cursors.

        ``cursors``: None (every shard from its oldest record), a list with one cursor per
        shard, or a dict {shard: cursor} to read only those shards (a relabel worker that
        owns some shards); the new cursors come back in the same form. Call again with
        them to stream. At most ``max_per_shard`` records per shard per call.
        """
        payloads, new = self.read_new_raw(cursors, max_per_shard, max_bytes_per_shard)
        return [codec.decode(p) for p in payloads], new

    def recent(self, n: int, held: Mapping[str, Trajectory] | None = None) -> list[Trajectory]:
        """The n newest trajectories over all shards by ``created_at``, oldest first.

        Each shard sends its n newest; only the n newest of all are decoded, and a record
        whose episode_id is in ``held`` comes back as that object, not decoded again (a
        relabel worker refreshing its reference set mostly gets back what it holds)."""
        if n <= 0:
            return []
        payloads = [p for recs in self._gather([(s, "recent", (n,)) for s in range(self.num_shards)]) for p in recs]
        keys = [codec.peek(p) for p in payloads]
        order = sorted(range(len(payloads)), key=lambda i: keys[i][1])  # stable: shard order on equal times
        held = held or {}
        return [held.get(keys[i][0]) or codec.decode(payloads[i]) for i in order[max(0, len(order) - n) :]]

    def sample(self, n: int, seed: int | None = None) -> list[Trajectory]:
        """min(n, total) distinct trajectories drawn uniformly over all shards (seeded)."""
        counts = self._gather([(s, "count", ()) for s in range(self.num_shards)])
        rng = np.random.default_rng(seed)
        take = rng.multivariate_hypergeometric(counts, min(n, sum(counts)))
        seeds = rng.integers(2**63, size=self.num_shards)
        calls = [(s, "sample", (int(k), int(seeds[s]))) for s, k in enumerate(take) if k > 0]
        return [codec.decode(p) for recs in self._gather(calls) for p in recs]

    def by_task(self, family: str, task: Any, n: int | None = None, atol: float = 0.0) -> list[Trajectory]:
        """The newest n (all when None) trajectories of a task over all shards, oldest first."""
        task = np.asarray(task, dtype=np.float64)
        calls = [(s, "by_task", (family, task, n, atol)) for s in range(self.num_shards)]
        trajs = [codec.decode(p) for recs in self._gather(calls) for p in recs]
        trajs.sort(key=lambda t: t.created_at)
        return trajs if n is None else trajs[max(0, len(trajs) - n) :] if n > 0 else []

    def stats(self) -> dict[str, Any]:
        """Per-shard stats plus totals (records, bytes, per-family records and steps)."""
        shards = self._gather([(s, "stats", ()) for s in range(self.num_shards)])
        families: dict[str, dict[str, int]] = {}
        for st in shards:
            for f, c in st["families"].items():
                agg = families.setdefault(f, {"records": 0, "steps": 0})
                agg["records"] += c["records"]
                agg["steps"] += c["steps"]
        records = sum(st["records"] for st in shards)
        return {
            "num_shards": self.num_shards,
            "records": records,
            "trajectories": records,
            "bytes": sum(st["bytes"] for st in shards),
            "families": families,
            "shards": shards,
        }

    def recovery_losses(self, stats: dict[str, Any] | None = None) -> tuple[list[str], int, int]:
        """What the shards' recoveries lost on disk, for the driver's console and TensorBoard.

        Returns (one summary line per damaged recovery not returned before, records lost
        and bytes moved aside over every shard start this client has seen). A shard
        restarted by Ray recovers again; its new report is picked up on the next call.
        ``stats``: a ``stats()`` result to reuse.
        """
        stats = stats or self.stats()
        new = []
        for st in stats["shards"]:
            rec = st["recovery"]
            key = (int(st["shard"]), float(rec["started_at"]))
            if key not in self._recoveries:
                self._recoveries[key] = (int(rec["dropped_records"]), int(rec["dropped_bytes"]))
                if not rec["ok"]:
                    new.append(rec["summary"])
        records = sum(r for r, _ in self._recoveries.values())
        return new, records, sum(b for _, b in self._recoveries.values())

    def sync(self) -> None:
        """fsync every shard's active segment now."""
        self._gather([(s, "sync", ()) for s in range(self.num_shards)])

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Close every shard (final fsync, files and directory locks released), then end
        the actors for good. The directory can then be reopened by ``start_store``."""
        refs = [h.close.remote() for h in self.shards]
        try:
            ray.get(refs, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("store shutdown: a shard did not close cleanly (%s); its next start recovers", exc)
        for h in self.shards:
            ray.kill(h, no_restart=True)


class StoreShardLostError(RuntimeError):
    """A shard pinned to a node that is no longer in the cluster: its segments are on that
    node's disk, so it cannot be restarted elsewhere (unless the root is shared)."""

    def __init__(self, shard: int, node_id: str, directory: str | os.PathLike, ip: str | None = None):
        self.shard, self.node_id, self.directory = shard, node_id, str(directory)
        at = f" ({ip})" if ip else ""
        super().__init__(
            f"store shard {shard} ({directory}) is pinned to node {node_id}{at}, which is not alive in this Ray "
            "cluster: its segments are on that node's disk. Bring the node back, or copy the directory to the same "
            "path on a live node and remove the shard's entry from store.json, or set store.shared_filesystem=true "
            "if the store root is on storage that every node mounts"
        )


def alive_nodes() -> dict[str, dict[str, Any]]:
    """Node id -> ray.nodes() entry of the nodes alive now."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def _place_shards(
    root: Path, num_shards: int, meta: dict[str, Any], pin_to_node: bool, shard_nodes: Mapping[int, str] | None
) -> dict[int, str | None]:
    """The node each shard is pinned to (None: anywhere), from store.json's record or, for
    a shard without one, ``shard_nodes`` or this node. See ``start_store``."""
    if not pin_to_node:
        return {i: None for i in range(num_shards)}
    alive = alive_nodes()
    here = ray.get_runtime_context().get_node_id()
    recorded = meta.get("nodes", {})
    out: dict[int, str | None] = {}
    for i in range(num_shards):
        rec = recorded.get(str(i))
        directory = shard_dir(root, i)
        if rec is None:
            node = (shard_nodes or {}).get(i, here)
            if node not in alive:
                raise ValueError(f"store shard {i}: node {node} (shard_nodes) is not alive in this Ray cluster")
        elif rec["node_id"] in alive:
            node = rec["node_id"]
        elif directory.is_dir():
            # the node id is gone (e.g. Ray was restarted: ids are per raylet), but the
            # shard's files are readable here: this machine's disk holds them now
            same_machine = rec.get("ip") is not None and rec.get("ip") == alive.get(here, {}).get("NodeManagerAddress")
            log.log(
                logging.INFO if same_machine else logging.WARNING,
                "store shard %d: node %s is gone but %s is readable on this node; pinning the shard here (%s)",
                i, rec["node_id"], directory, here,
            )
            node = here
        else:
            raise StoreShardLostError(i, rec["node_id"], directory, rec.get("ip"))
        out[i] = node
    return out


def start_store(
    root_dir: str | os.PathLike,
    num_shards: int,
    fsync: FsyncPolicy = "interval",
    *,
    fsync_interval_s: float = 1.0,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    max_segments: int | None = None,
    max_bytes_per_shard: int | None = None,
    name_prefix: str | None = None,
    namespace: str | None = None,
    detached: bool = False,
    num_cpus: float = 0.05,
    cpu_priority: str = "normal",
    pin_to_node: bool = True,
    family_lookup: Callable[[str], Any] | None = None,
    timeout_s: float | None = 120.0,
    min_next_seq: Mapping[int, int] | None = None,
    shard_nodes: Mapping[int, str] | None = None,
) -> TrajectoryStore:
    """Create (or, by name, re-attach to) S shard actors over ``root_dir/shard-NNN``.

    Actors are named ``{name_prefix}-shard-{i}``; the default prefix derives from
    ``root_dir`` (``default_name_prefix``), so ``TrajectoryStore.connect(root_dir)`` finds
    them. Returns once every shard has recovered its directory.

    ``root_dir/store.json`` records S; reopening a store with another S is an error
    (routing would change).

    Placement (``pin_to_node``, the default): each shard is pinned (hard node affinity)
    to the node whose disk holds its segments, recorded in store.json as ``nodes``
    ({shard: {"node_id", "ip"}}); Ray restarts a killed shard on that node. A new shard
    goes to ``shard_nodes[shard]`` or else this node. On a restart, a shard whose
    recorded node is gone goes to this node when its directory is readable here (a
    single machine whose Ray was restarted), and is otherwise a StoreShardLostError naming
    shard, node and directory; so is a shard whose node leaves while the store runs (the
    client raises it instead of waiting). ``pin_to_node=False`` (``store.shared_filesystem``
    in the config): ``root_dir`` is on storage every node mounts, so a shard may start
    and restart on any node. ``namespace``/
    ``detached``: set them so that other Ray jobs can ``TrajectoryStore.connect``.

    ``min_next_seq``: {shard: seq} floors for the shards' next seqs, e.g. the cursors a
    resumed run saved: appends never reuse a seq a reader has passed, even when recovery
    lost the tail of a shard and its seq file (see ``segments``, "Sequence numbers").
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / STORE_META
    meta: dict[str, Any] = {"num_shards": num_shards, "format": 1}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["num_shards"] != num_shards:
            raise ValueError(f"store {root} has {meta['num_shards']} shards; cannot open it with num_shards={num_shards}")
    nodes = _place_shards(root, num_shards, meta, pin_to_node, shard_nodes)
    alive = alive_nodes()
    meta["shared_filesystem"] = not pin_to_node
    if pin_to_node:
        meta["nodes"] = {
            str(i): {"node_id": n, "ip": alive.get(n, {}).get("NodeManagerAddress")} for i, n in nodes.items()
        }
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, meta_path)
    options: dict[str, Any] = {"num_cpus": num_cpus, "get_if_exists": True}
    if namespace is not None:
        options["namespace"] = namespace
    if detached:
        options["lifetime"] = "detached"
    name_prefix = name_prefix or default_name_prefix(root)
    # cpu_priority (actors/priority.py): a restarted shard runs __init__ again, so it keeps it
    shard_actor = ShardActor if cpu_priority == "normal" else ray.remote(**SHARD_ACTOR_OPTIONS)(
        background(Shard, cpu_priority))

    def placed(i: int) -> dict[str, Any]:
        if nodes[i] is None:
            return options
        return {**options, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=nodes[i], soft=False)}

    handles = [
        shard_actor.options(name=shard_actor_name(name_prefix, i), **placed(i)).remote(
            str(shard_dir(root, i)),
            i,
            segment_bytes=segment_bytes,
            fsync=fsync,
            fsync_interval_s=fsync_interval_s,
            max_segments=max_segments,
            max_bytes=max_bytes_per_shard,
            min_next_seq=int((min_next_seq or {}).get(i, 0)),
            validate=True,  # a second line behind the client's check: writers may call the actor directly
            family_lookup=family_lookup,
        )
        for i in range(num_shards)
    ]
    placement = {i: (nodes[i], str(shard_dir(root, i))) for i in range(num_shards)}
    store = TrajectoryStore(handles, family_lookup=family_lookup, timeout_s=timeout_s, placement=placement)
    try:
        started = store._gather([(i, "stats", ()) for i in range(num_shards)])
    except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnschedulableError) as exc:
        # a shard its node cannot hold (too small: Ray says so; full: it would wait forever)
        why = "could not be placed" if isinstance(exc, ray.exceptions.ActorUnschedulableError) else f"did not start within {timeout_s} s"
        where = "; ".join(f"shard {i} -> node {n or 'any'} ({d})" for i, (n, d) in placement.items())
        for h in handles:
            ray.kill(h, no_restart=True)
        raise RuntimeError(
            f"store: the shard actors {why}; each needs num_cpus={num_cpus} on its node ({where}). "
            "Is that node full or smaller than that? (`ray status` shows what is free)"
        ) from None
    # get_if_exists may hand back running actors: make sure they serve this directory
    for i, st in enumerate(started):
        if Path(st["directory"]).resolve() != shard_dir(root, i).resolve():
            raise ValueError(
                f"actor {shard_actor_name(name_prefix, i)!r} already serves {st['directory']}, "
                f"not {shard_dir(root, i)}: pass another name_prefix"
            )
    return store

"""The durable, sharded trajectory store: keeping trajectories (relabeling them is next door).

    codec.py     msgpack records, CRC frames, validation
    segments.py  the append-only segment log of one directory, recovery, fsync policies
    shard.py     Shard: a segment log plus its in-memory index (reads, recent-N, per-task sets)
    actor.py     Ray at the edge: one actor per shard, the TrajectoryStore client, start_store
    tools.py     offline verify / stats / load_all over a store directory

Nothing here but ``actor.py`` imports Ray.
"""

from relabel_service.store.segments import (
    Ack,
    ShardLockedError,
    list_segments,
    shard_dir,
    shard_for,
)
from relabel_service.store.shard import Shard

__all__ = ["Ack", "Shard", "ShardLockedError", "list_segments", "shard_dir", "shard_for"]

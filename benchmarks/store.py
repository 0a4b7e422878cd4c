"""Trajectory store throughput and recovery, as ratios measured in one run.

    from benchmarks.store import run
    print(run(quick=True))          # or: python -m benchmarks.store [--quick]

* append: pre-encoded small trajectories appended one call each to a Shard with fsync
  "interval" (what a shard actor does per request), and in batches of 64 (append_many),
  against writing the same framed bytes to one plain file with one ``os.write`` per record
  (and one fdatasync at the end) and with a buffered file. ``ratio_*`` = shard / plain.
* read: the same records streamed back with ``Shard.read`` cursors, decoded.
* recovery: a Shard re-opening 10^5 small trajectories (quick: 10^4): index rebuilt from
  the segment files (warm page cache: this measures the scan and indexing, not the disk).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from relabel_service.store import codec
from relabel_service.core import Trajectory
from relabel_service.store import Shard


def _trajectories(n: int, T: int, seed: int = 0) -> list[Trajectory]:
    """Small test_goal-shaped trajectories: obs 2, action 2, task 2, no reward inputs."""
    rng = np.random.default_rng(seed)
    return [
        Trajectory(
            episode_id=f"w{i % 8}-e{i}",
            worker_id=i % 8,
            policy_version=i // 100,
            family="test_goal",
            task=rng.uniform(-1, 1, 2),
            obs=rng.normal(size=(T + 1, 2)).astype(np.float32),
            actions=rng.uniform(-1, 1, (T, 2)).astype(np.float32),
            rewards=rng.normal(size=T).astype(np.float32),
            terminated=np.zeros(T, dtype=bool),
            truncated=True,
            reward_inputs=np.zeros((T, 0), dtype=np.float32),
            created_at=1.7e9 + i,
        )
        for i in range(n)
    ]


def _rate(n: int, nbytes: int, seconds: float) -> dict[str, float]:
    return {"seconds": seconds, "traj_per_s": n / seconds, "mb_per_s": nbytes / seconds / 1e6}


def _best(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def run(quick: bool = False, directory: str | None = None) -> dict[str, Any]:
    n_append = 5_000 if quick else 50_000
    n_recover = 10_000 if quick else 100_000
    T = 20
    repeats = 2 if quick else 3
    trajs = _trajectories(max(n_append, n_recover), T)
    t0 = time.perf_counter()
    payloads = [codec.encode(t) for t in trajs]
    encode_s = time.perf_counter() - t0
    appended = payloads[:n_append]
    framed = [codec.frame(p) for p in appended]
    nbytes = sum(len(f) for f in framed)

    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-store-") as tmp:
        root = Path(tmp)
        counter = iter(range(10**9))

        def shard_single() -> float:
            with Shard(root / f"s{next(counter)}", fsync="interval") as sh:
                t = time.perf_counter()
                for p in appended:
                    sh.append(p)
                return time.perf_counter() - t

        def shard_batched() -> float:
            with Shard(root / f"s{next(counter)}", fsync="interval") as sh:
                t = time.perf_counter()
                for i in range(0, n_append, 64):
                    sh.append_many(appended[i : i + 64])
                return time.perf_counter() - t

        def plain_write() -> float:
            fd = os.open(root / f"plain{next(counter)}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            t = time.perf_counter()
            for f in framed:
                os.write(fd, f)
            os.fdatasync(fd)
            seconds = time.perf_counter() - t
            os.close(fd)
            return seconds

        def plain_buffered() -> float:
            with open(root / f"buffered{next(counter)}", "wb", buffering=1 << 20) as fh:
                t = time.perf_counter()
                for f in framed:
                    fh.write(f)
                fh.flush()
                os.fdatasync(fh.fileno())
                return time.perf_counter() - t

        single = _rate(n_append, nbytes, _best(shard_single, repeats))
        batched = _rate(n_append, nbytes, _best(shard_batched, repeats))
        plain = _rate(n_append, nbytes, _best(plain_write, repeats))
        buffered = _rate(n_append, nbytes, _best(plain_buffered, repeats))

        # read back + recovery of n_recover records
        rec_dir = root / "recover"
        with Shard(rec_dir, fsync="never") as sh:
            for i in range(0, n_recover, 1024):
                sh.append_many(payloads[i : i + 1024])
            rec_bytes = sh.stats()["bytes"]
            t = time.perf_counter()
            cursor, got = 0, 0
            while True:
                recs, cursor = sh.read(cursor, 256)
                if not recs:
                    break
                got += len([codec.decode(r) for r in recs])
            read_s = time.perf_counter() - t
            assert got == n_recover
        t = time.perf_counter()
        with Shard(rec_dir, fsync="never") as sh:
            recover_s = time.perf_counter() - t
            assert sh.recovery_report.records == n_recover and sh.recovery_report.ok

    return {
        "quick": quick,
        "trajectory": {"T": T, "payload_bytes": len(payloads[0]), "obs_dim": 2, "action_dim": 2},
        "records": n_append,
        "encode_us_per_traj": encode_s / len(payloads) * 1e6,
        "append": {
            "shard_interval": single,
            "shard_interval_batch64": batched,
            "plain_file_write_per_record": plain,
            "plain_file_buffered": buffered,
        },
        "ratio_shard_vs_plain_write": single["traj_per_s"] / plain["traj_per_s"],
        "ratio_shard_batch64_vs_plain_write": batched["traj_per_s"] / plain["traj_per_s"],
        "ratio_shard_vs_plain_buffered": single["traj_per_s"] / buffered["traj_per_s"],
        "read": _rate(n_recover, rec_bytes, read_s),
        "recovery": {
            "records": n_recover,
            "bytes": rec_bytes,
            "seconds": recover_s,
            "records_per_s": n_recover / recover_s,
            "mb_per_s": rec_bytes / recover_s / 1e6,
        },
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(run(quick="--quick" in argv), indent=2))


if __name__ == "__main__":
    main()

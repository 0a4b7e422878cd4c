"""One shard of the trajectory store: a SegmentLog plus an in-memory index. No Ray here."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from relabel_service.store import codec
from relabel_service.core import Trajectory

from relabel_service.store.segments import _HDR, DEFAULT_SEGMENT_BYTES, Ack, FsyncPolicy, SegmentLog

log = logging.getLogger(__name__)

@dataclasses.dataclass
class _TaskEntry:
    family: str
    task: np.ndarray  # [Z] float64
    seqs: collections.deque  # seqs of retained records with this task, ascending


class Shard:
    """One shard of the trajectory store: a SegmentLog plus an index rebuilt on start.

    ``validate``: check every appended record with ``codec.validate`` (families from
    ``family_lookup``, default envs.get_family) and refuse it with an error naming the
    field. The shard actor does; the client validates too, before sending, so a bad
    trajectory normally never leaves its worker (this is the second line: any writer
    that reaches the actor directly).

    Index (in memory, per retained record): seq -> (segment, offset, payload length),
    episode id (appends are idempotent per episode id), task (exact per-task sets) and
    T. Built from each record's header (``codec.peek_header``), never a full decode.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        shard_id: int = 0,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
        max_segments: int | None = None,
        max_bytes: int | None = None,
        background_sync: bool = True,
        clock: Callable[[], float] = time.monotonic,
        lock_timeout_s: float = 10.0,
        min_next_seq: int = 0,
        validate: bool = False,
        family_lookup: Callable[[str], Any] | None = None,
    ):
        self.shard_id = shard_id
        self.validate = validate
        lookup = family_lookup or (codec.default_family_lookup() if validate else None)
        self._lookup = functools.lru_cache(maxsize=None)(lookup) if lookup is not None else None
        self.directory = Path(directory)
        # the index: parallel columns, rows [_start:] retained, ascending seq
        self._start = 0
        self._seqs: list[int] = []
        self._rows: list[tuple[int, int, int, int, str, int]] = []  # segment, offset, length, task id, episode id, T
        self._by_episode: dict[str, int] = {}
        self._task_ids: dict[tuple[str, bytes], int] = {}
        self._tasks: dict[int, _TaskEntry] = {}
        self._next_task_id = 0
        self._families: dict[str, list[int]] = {}  # family -> [records, steps]
        self.appended = 0
        self.duplicates = 0
        self._log = SegmentLog(
            directory,
            segment_bytes=segment_bytes,
            fsync=fsync,
            fsync_interval_s=fsync_interval_s,
            max_segments=max_segments,
            max_bytes=max_bytes,
            background_sync=background_sync,
            clock=clock,
            on_record=self._index_recovered,
            on_drop=self._drop_segment,
            lock_timeout_s=lock_timeout_s,
            min_next_seq=min_next_seq,
        )
        self.recovery_report = self._log.recovery_report
        self.recovery_report.shard = shard_id
        r = self.recovery_report
        log.info(
            "shard %d (%s): recovered %d records in %d segments (seq %s..%d) in %.3f s%s",
            shard_id, directory, r.records, r.segments, r.first_seq, r.next_seq, r.elapsed_s,
            "" if r.ok else f"; {len(r.problems)} problem(s)",
        )

    # ---- index ------------------------------------------------------------------------------
    def _index_recovered(self, seq: int, segment: int, offset: int, payload: memoryview) -> str | None:
        try:
            header = codec.peek_header(payload)
        except codec.CodecError as exc:
            return str(exc)
        self._add(seq, segment, offset, len(payload), header)
        return None

    def _add(self, seq: int, segment: int, offset: int, length: int, h: codec.RecordHeader) -> None:
        key = (h.family, np.asarray(h.task, dtype=np.float64).tobytes())
        tid = self._task_ids.get(key)
        if tid is None:
            tid = self._task_ids[key] = self._next_task_id
            self._next_task_id += 1
            self._tasks[tid] = _TaskEntry(h.family, np.array(h.task, dtype=np.float64), collections.deque())
        self._tasks[tid].seqs.append(seq)
        self._seqs.append(seq)
        self._rows.append((segment, offset, length, tid, h.episode_id, h.steps))
        self._by_episode[h.episode_id] = seq
        fam = self._families.setdefault(h.family, [0, 0])
        fam[0] += 1
        fam[1] += h.steps

    def _drop_segment(self, segment: int) -> None:
        """Forget the index rows of a segment dropped for capacity (always the oldest)."""
        i = self._start
        while i < len(self._rows) and self._rows[i][0] == segment:
            _, _, _, tid, eid, steps = self._rows[i]
            entry = self._tasks[tid]
            entry.seqs.popleft()
            if not entry.seqs:
                del self._tasks[tid]
                del self._task_ids[(entry.family, entry.task.tobytes())]
            if self._by_episode.get(eid) == self._seqs[i]:
                del self._by_episode[eid]
            fam = self._families[entry.family]
            fam[0] -= 1
            fam[1] -= steps
            if fam[0] == 0:
                del self._families[entry.family]
            i += 1
        self._start = i
        if self._start > 4096 and self._start * 2 > len(self._rows):
            del self._seqs[: self._start], self._rows[: self._start]
            self._start = 0

    def __len__(self) -> int:
        return len(self._rows) - self._start

    # ---- writes -----------------------------------------------------------------------------
    def _payload(self, record: Any) -> tuple[Any, codec.RecordHeader]:
        payload = codec.encode(record) if isinstance(record, Trajectory) else record
        try:
            header = codec.peek_header(payload)
            traj = codec.decode(payload) if self.validate else None
        except (codec.CodecError, TypeError) as exc:
            raise codec.InvalidTrajectoryError(
                f"shard {self.shard_id}: record is not an encoded trajectory: {exc}"
            ) from None
        if traj is not None:
            try:
                codec.validate(traj, lookup=self._lookup)
            except codec.InvalidTrajectoryError as exc:
                raise codec.InvalidTrajectoryError(f"shard {self.shard_id} refused {exc}") from None
        return payload, header

    def append(self, record: bytes | Trajectory) -> Ack:
        """Store one record (an encoded trajectory, or a Trajectory to encode).

        Returns after the record is written per the fsync policy. Appending an episode id
        that is already stored writes nothing and returns the first copy's ack with
        ``duplicate=True`` (so clients may retry after a crash without duplicating).
        """
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[bytes | Trajectory]) -> list[Ack]:
        """Store several records with one write (and at most one fsync) per segment.

        Every record is checked before any is written: one bad record rejects the batch.
        """
        parsed = [self._payload(r) for r in records]
        acks: list[Ack | None] = [None] * len(parsed)
        fresh: dict[str, int] = {}  # episode id -> position of its first copy in this batch
        todo = []
        for i, (_, h) in enumerate(parsed):
            if h.episode_id in fresh:
                continue  # a copy within the batch: acked below, after its first copy
            seq = self._by_episode.get(h.episode_id)
            if seq is not None:
                acks[i] = self._ack_of(seq)._replace(duplicate=True)
                continue
            fresh[h.episode_id] = i
            todo.append(i)
        placed = self._log.append_many([parsed[i][0] for i in todo])
        oldest = self._log.segments[0].index
        for i, (segment, offset, seq) in zip(todo, placed):
            payload, h = parsed[i]
            # a batch spanning several rolls may see its own first segment aged out
            if segment >= oldest:
                self._add(seq, segment, offset, memoryview(payload).nbytes, h)
            acks[i] = Ack(self.shard_id, segment, offset, seq)
        for i, (_, h) in enumerate(parsed):
            if acks[i] is None:
                acks[i] = acks[fresh[h.episode_id]]._replace(duplicate=True)  # type: ignore[union-attr]
        self.appended += len(todo)
        self.duplicates += len(parsed) - len(todo)
        return acks  # type: ignore[return-value]

    def _ack_of(self, seq: int) -> Ack:
        pos = self._pos(seq)
        segment, offset = self._rows[pos][:2]
        return Ack(self.shard_id, segment, offset, seq)

    def _pos(self, seq: int) -> int:
        return bisect.bisect_left(self._seqs, seq, lo=self._start)

    # ---- reads ------------------------------------------------------------------------------
    def _read_positions(self, positions: Sequence[int], max_bytes: int | None = None) -> list[bytes]:
        """Payloads of index rows (ascending positions): one pread per back-to-back run."""
        out: list[bytes] = []
        run: list[tuple[int, int]] = []
        run_seg = -1
        total = 0
        for pos in positions:
            segment, offset, length = self._rows[pos][:3]
            if max_bytes is not None and (out or run) and total + length > max_bytes:
                break
            total += length
            if run and (segment != run_seg or offset != run[-1][0] + _HDR + run[-1][1] or len(run) >= 1024):
                out += self._log.read_run(run_seg, run)
                run = []
            run_seg = segment
            run.append((offset, length))
        if run:
            out += self._log.read_run(run_seg, run)
        return out

    def read(self, cursor: int, max_records: int = 256, max_bytes: int | None = None) -> tuple[list[bytes], int]:
        """Records with seq >= cursor, oldest first: (payloads, next cursor).

        A cursor older than the oldest retained record starts there (records dropped for
        capacity are skipped, not an error). ``max_bytes`` caps the reply (at least one
        record is returned when there is one). The next cursor is one past the last
        record returned, or ``min(cursor, next seq)`` when there is nothing new.
        """
        first = self._pos(cursor)
        positions = range(first, min(first + max(max_records, 0), len(self._rows)))
        payloads = self._read_positions(positions, max_bytes)
        if payloads:
            return payloads, self._seqs[first + len(payloads) - 1] + 1
        return payloads, min(cursor, self._log.next_seq)

    def read_seqs(self, cursor: int, max_records: int = 256) -> list[int]:
        """The seqs ``read`` would return (for tests and tools)."""
        first = self._pos(cursor)
        return self._seqs[first : first + max_records]

    def recent(self, n: int) -> list[bytes]:
        """The newest min(n, len) records, oldest first."""
        n = max(0, min(n, len(self)))
        return self._read_positions(range(len(self._rows) - n, len(self._rows)))

    def sample(self, n: int, rng_seed: int | None = None) -> list[bytes]:
        """min(n, len) distinct records drawn uniformly (seeded), in seq order."""
        count = len(self)
        n = max(0, min(n, count))
        picks = np.random.default_rng(rng_seed).choice(count, size=n, replace=False)
        return self._read_positions(sorted(self._start + int(p) for p in picks))

    def by_task(self, family: str, task: Any, n: int | None = None, atol: float = 0.0) -> list[bytes]:
        """The newest n (all when None) records of ``family`` whose task is within ``atol``
        (max-abs) of ``task``, oldest first."""
        task = np.asarray(task, dtype=np.float64)
        if atol == 0.0:
            tid = self._task_ids.get((family, task.tobytes()))
            tids = [] if tid is None else [tid]
        else:
            tids = [
                t for t, e in self._tasks.items()
                if e.family == family and e.task.shape == task.shape and np.max(np.abs(e.task - task), initial=0.0) <= atol
            ]
        seqs = sorted(s for t in tids for s in self._tasks[t].seqs)
        if n is not None:
            seqs = seqs[max(0, len(seqs) - n) :] if n > 0 else []
        return self._read_positions([self._pos(s) for s in seqs])

    def task_counts(self) -> list[tuple[str, list[float], int]]:
        """(family, task, number of retained records) per distinct task."""
        return [(e.family, e.task.tolist(), len(e.seqs)) for e in self._tasks.values()]

    # ---- admin ------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        return self._log.next_seq

    def count(self) -> int:
        return len(self)

    def stats(self) -> dict[str, Any]:
        lg = self._log
        return {
            "shard": self.shard_id,
            "directory": str(self.directory),
            "records": len(self),
            "first_seq": self._seqs[self._start] if len(self) else None,
            "next_seq": lg.next_seq,
            "segments": len(lg.segments),
            "bytes": lg.total_bytes,
            "active_segment": lg.segments[-1].index,
            "dropped_segments": lg.dropped_segments,
            "appended": self.appended,
            "duplicates": self.duplicates,
            "fsync": lg.fsync,
            "fsyncs": lg.fsyncs,
            "families": {f: {"records": c[0], "steps": c[1]} for f, c in sorted(self._families.items())},
            "distinct_tasks": len(self._tasks),
            "recovery": self.recovery_report.to_dict(),
        }

    def sync(self) -> None:
        self._log.sync()

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> "Shard":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

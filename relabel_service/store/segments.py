"""Durable trajectory store: append-only segment logs, one Shard per directory. No Ray here.

    shard = Shard("/data/store/shard-000", shard_id=0, fsync="interval")
    ack = shard.append(codec.encode(traj))            # Ack(shard, segment, offset, seq)
    payloads, cursor = shard.read(cursor=0, max_records=256)
    shard_for("w0-e17", num_shards=4)                  # stable routing, same on every host

On disk, one directory per shard::

    seg-00000000.log seg-00000001.log ...      append-only segment files
    seg-00000003.log.dropped-000000001234      bytes that recovery cut off (kept, never read)
    .lock                                      flock of the one writer

    segment := frame(header) frame(record) frame(record) ...
    frame   := length (uint32 LE) | crc32 (uint32 LE) | payload              (codec.frame)
    header  := msgpack {"magic": "hindsight-segment", "version": 1, "first_seq": N}
    record  := codec.encode(trajectory)

Sequence numbers. Record k (0, 1, ...) of a segment has seq ``first_seq + k``; a new
segment starts at the shard's next seq. Seqs are therefore stable across restarts and
survive dropped segments and dropped corrupt records (they leave gaps). A reader's cursor
is a seq: ``read(cursor)`` returns records with seq >= cursor; a cursor older than the
oldest retained record starts at the oldest.

Durability (``fsync``). ``append`` returns after ``write(2)`` of the whole frame, so an
acknowledged record survives a crash of the process (the Ray actor) under every policy.
Against power loss / kernel crash:
  * ``"always"``: fdatasync before every acknowledgement (``append_many``: once per batch);
  * ``"interval"``: fdatasync at most every ``fsync_interval_s`` seconds, by a background
    thread while the log is dirty, and on roll and close (Redis ``appendfsync everysec``):
    up to ~``fsync_interval_s`` of acknowledged appends can be lost to a power failure;
  * ``"never"``: left to the OS (tests, benchmarks, scratch stores).
Rolling to a new segment always syncs the old one, the new header and the directory
(except under ``"never"``), so a segment's identity is never lost.

Recovery. On start a Shard scans its segments in order and rebuilds its index. The first
bad frame of a segment (torn tail: truncated record; corrupt: CRC mismatch or bad length)
ends that segment: the bytes from there on are moved to a ``.dropped-OFFSET`` file, the
segment is truncated to its last good record, and the loss is logged (WARNING) and listed
in ``Shard.recovery_report``. Everything before the bad frame, and every other segment,
is kept with its original seqs. A segment whose header frame is unreadable is moved
aside whole; a record with a good CRC that does not decode is skipped alone. A torn tail
of the last segment is the normal result of a crash during a write: that record was never
acknowledged.

Capacity. ``max_segments`` and/or ``max_bytes`` bound a shard; when rolling, the oldest
segments are deleted WHOLE until both bounds hold (the active segment is never dropped).
``max_bytes`` reserves a full ``segment_bytes`` for the active segment, so the files never
exceed it (save for single records larger than a segment, or max_bytes < 2 segments).

One writer per directory: a SegmentLog holds an flock on ``DIR/.lock`` (released by the
kernel when its process dies, so a restarted actor re-acquires it); a second writer gets
ShardLockedError. Readers of the files (``tools``) need no lock. A Shard is not
thread-safe: one caller at a time (a Ray actor's default); the interval-sync thread only
fsyncs a duplicate of the file descriptor.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import fcntl
import logging
import os
import re
import threading
import time
import weakref
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple, Sequence

import msgpack

from relabel_service.store import codec

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_POLICIES = ("always", "interval", "never")
DEFAULT_SEGMENT_BYTES = 64 << 20
SEGMENT_RE = re.compile(r"^seg-(\d{8,})\.log$")
SEGMENT_MAGIC = "hindsight-segment"
SEGMENT_VERSION = 1
_HDR = codec.FRAME_HEADER.size
_fdatasync = getattr(os, "fdatasync", os.fsync)


def shard_for(episode_id: str, num_shards: int) -> int:
    """Shard of an episode: crc32 of its utf-8 id mod S (stable across processes, unlike hash())."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return zlib.crc32(episode_id.encode("utf-8")) % num_shards


#: at a store root: {"num_shards": S, "format": 1}; shards live in shard_dir(root, i)
STORE_META = "store.json"


def shard_dir(root_dir: str | os.PathLike, shard: int) -> Path:
    return Path(root_dir) / f"shard-{shard:03d}"


def segment_name(index: int) -> str:
    return f"seg-{index:08d}.log"


def list_segments(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """(index, path) of the segment files of a shard directory, oldest first."""
    out = []
    for entry in os.scandir(directory):
        m = SEGMENT_RE.match(entry.name)
        if m and entry.is_file():
            out.append((int(m.group(1)), Path(entry.path)))
    return sorted(out)


def encode_segment_header(first_seq: int) -> bytes:
    return msgpack.packb({"magic": SEGMENT_MAGIC, "version": SEGMENT_VERSION, "first_seq": first_seq})


def decode_segment_header(payload: Any) -> int:
    """first_seq of a segment header payload; ValueError when it is not one."""
    try:
        h = msgpack.unpackb(payload, raw=False)
        if h["magic"] != SEGMENT_MAGIC or h["version"] != SEGMENT_VERSION:
            raise ValueError(f"magic/version {h['magic']!r}/{h['version']!r}")
        first_seq = int(h["first_seq"])
    except Exception as exc:
        raise ValueError(f"not a segment header: {exc!r}") from None
    if first_seq < 0:
        raise ValueError(f"negative first_seq {first_seq}")
    return first_seq


class Ack(NamedTuple):
    """Where an appended record lives: returned once it is written (per the fsync policy)."""

    shard: int
    segment: int
    offset: int  # of the frame in the segment file
    seq: int  # the shard's sequence number: the reader's cursor unit
    duplicate: bool = False  # the episode id was already stored; this is the first copy


# ---- scanning (read-only; shared by recovery and tools) ------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """A damaged region of a segment.

    kind: ``torn_tail`` | ``bad_length`` | ``crc_mismatch`` (from the frame scan),
    ``bad_header`` (the segment's header frame is unreadable: the whole file is unusable),
    ``seq_overlap`` (a header whose first_seq goes backwards), ``undecodable`` (a frame
    with a good CRC whose payload is not a trajectory; only that record is skipped),
    ``invalid`` (tools.verify: a decodable trajectory that fails codec.validate).
    """

    segment: int
    offset: int
    kind: str
    detail: str
    dropped_bytes: int = 0
    seq: int | None = None
    moved_to: str | None = None

    def describe(self) -> str:
        where = f"{segment_name(self.segment)} @ {self.offset}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        tail = f"; {self.dropped_bytes} bytes dropped" if self.dropped_bytes else ""
        tail += f", moved to {self.moved_to}" if self.moved_to else ""
        return f"{where}: {self.kind}: {self.detail}{tail}"


@dataclasses.dataclass
class SegmentScan:
    """One segment file read whole: its header, good frames, and the first bad one."""

    index: int
    path: Path
    data: bytes
    first_seq: int | None  # None: bad or torn header
    frames: list[tuple[int, int]]  # (frame offset, payload length) after the header
    valid_end: int  # offset just past the last good frame (0 with a bad header)
    problem: Problem | None

    def payload(self, offset: int, length: int) -> memoryview:
        return memoryview(self.data)[offset + _HDR : offset + _HDR + length]

    def records(self) -> Iterator[tuple[int, int, memoryview]]:
        """(seq, frame offset, payload view) of every good frame after the header."""
        assert self.first_seq is not None
        for k, (off, n) in enumerate(self.frames):
            yield self.first_seq + k, off, self.payload(off, n)


def scan_segment(index: int, path: str | os.PathLike) -> SegmentScan:
    """Read one segment file and check its framing (not its payloads). Never modifies it."""
    with open(path, "rb") as f:
        data = f.read()
    frames = codec.iter_frames(data)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        p = frames.problem
        kind = "torn_tail" if p is None or p.is_torn_tail else "bad_header"
        detail = "empty segment (no header)" if p is None else f"header frame: {p.detail}"
        return SegmentScan(index, Path(path), data, None, [], 0, Problem(index, 0, kind, detail, len(data)))
    try:
        first_seq = decode_segment_header(first[1])
    except ValueError as exc:
        return SegmentScan(
            index, Path(path), data, None, [], 0, Problem(index, 0, "bad_header", str(exc), len(data))
        )
    out = [(off, len(p)) for off, p in it]
    problem = None
    if frames.problem is not None:
        fp = frames.problem
        problem = Problem(index, fp.offset, fp.kind, fp.detail, fp.dropped_bytes, seq=first_seq + len(out))
    return SegmentScan(index, Path(path), data, first_seq, out, frames.end, problem)


def scan_shard(directory: str | os.PathLike) -> Iterator[SegmentScan]:
    """Scans of every segment of a shard directory, oldest first, one file in memory at a time."""
    for index, path in list_segments(directory):
        yield scan_segment(index, path)


@dataclasses.dataclass
class RecoveryReport:
    """What a Shard found when it rebuilt its index from disk."""

    directory: str
    shard: int = 0
    segments: int = 0
    records: int = 0
    bytes: int = 0
    first_seq: int | None = None
    next_seq: int = 0
    elapsed_s: float = 0.0
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


@dataclasses.dataclass
class SegmentInfo:
    index: int
    first_seq: int
    size: int  # bytes, header included
    path: Path


# ---- the segment log --------------------------------------------------------------------


class SegmentLog:
    """Append-only framed log split into segment files, with recovery and bounded capacity.

    ``on_record(seq, segment, offset, payload) -> str | None`` is called for every record
    found at start-up (a returned string marks the record undecodable: it is reported and
    skipped); ``on_drop(segment_index)`` before a segment is deleted for capacity.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
        max_segments: int | None = None,
        max_bytes: int | None = None,
        background_sync: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_record: Callable[[int, int, int, memoryview], str | None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        lock_timeout_s: float = 10.0,
    ):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if segment_bytes < 64:
            raise ValueError(f"segment_bytes must be >= 64, got {segment_bytes}")
        if max_segments is not None and max_segments < 1:
            raise ValueError(f"max_segments must be >= 1 or None, got {max_segments}")
        if fsync_interval_s < 0:
            raise ValueError(f"fsync_interval_s must be >= 0, got {fsync_interval_s}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.max_segments = max_segments
        self.max_bytes = max_bytes
        self._clock = clock
        self._on_drop = on_drop
        self.segments: list[SegmentInfo] = []
        self.next_seq = 0
        self.fsyncs = 0
        self.dropped_segments = 0
        self._fd = -1  # write fd of the active (last) segment
        self._read_fds: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._lock = threading.Lock()  # guards _fd against the sync thread
        self._dirty = False
        self._last_sync = clock()
        self._closed = True  # until the lock is held
        self._syncer: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock_fd = _lock_directory(self.directory, lock_timeout_s)
        self._closed = False
        try:
            self.recovery_report = self._recover(on_record)
            self._enforce_capacity()
        except BaseException:
            self.close()
            raise
        if fsync == "interval" and background_sync:
            self._syncer = threading.Thread(
                target=_sync_loop,
                args=(weakref.ref(self), self._stop, max(fsync_interval_s, 0.001)),
                name=f"fsync:{directory}",
                daemon=True,
            )
            self._syncer.start()

    # ---- recovery ----------------------------------------------------------------------
    def _recover(self, on_record: Callable | None) -> RecoveryReport:
        t0 = time.perf_counter()
        report = RecoveryReport(str(self.directory))
        found = list_segments(self.directory)
        for i, (index, path) in enumerate(found):
            last = i == len(found) - 1
            scan = scan_segment(index, path)
            report.segments += 1
            if scan.first_seq is not None and scan.first_seq < self.next_seq:
                scan.problem = Problem(
                    index, 0, "seq_overlap",
                    f"first_seq {scan.first_seq} < {self.next_seq} reached by older segments",
                    len(scan.data),
                )
                scan.first_seq, scan.frames, scan.valid_end = None, [], 0
            if scan.first_seq is None:
                if last and scan.problem.kind == "torn_tail" and len(scan.data) < 64:
                    # crash while creating this segment: not a loss, reinitialise it
                    log.info("%s: %s; re-creating it", path, scan.problem.detail)
                    os.unlink(path)
                    self._create_segment(index)
                    continue
                report.problems.append(self._cut(scan, 0))
                continue
            for seq, off, payload in scan.records():
                why = on_record(seq, index, off, payload) if on_record else None
                if why is not None:
                    p = Problem(index, off, "undecodable", why, 0, seq=seq)
                    log.warning("shard %s: skipping record: %s", self.directory, p.describe())
                    report.problems.append(p)
                else:
                    report.records += 1
            if scan.problem is not None:
                report.problems.append(self._cut(scan, scan.valid_end))
            self.segments.append(SegmentInfo(index, scan.first_seq, scan.valid_end, Path(path)))
            self.next_seq = scan.first_seq + len(scan.frames)
        if not self.segments or self.segments[-1].index != (found[-1][0] if found else -1):
            # no usable segment, or the last one was unusable: start a fresh one after it
            self._create_segment(found[-1][0] + 1 if found else 0)
        self._open_active()
        report.bytes = sum(s.size for s in self.segments)
        report.first_seq = self.segments[0].first_seq if self.segments else None
        report.next_seq = self.next_seq
        report.elapsed_s = time.perf_counter() - t0
        return report

    def _cut(self, scan: SegmentScan, at: int) -> Problem:
        """Move bytes [at:] of a damaged segment aside and truncate it there."""
        p = scan.problem
        moved = scan.path.with_name(f"{scan.path.name}.dropped-{at:012d}")
        k = 1
        while moved.exists():
            moved = scan.path.with_name(f"{scan.path.name}.dropped-{at:012d}.{k}")
            k += 1
        with open(moved, "wb") as f:
            f.write(memoryview(scan.data)[at:])
        if at == 0:
            os.unlink(scan.path)
        else:
            os.truncate(scan.path, at)
        self._sync_dir()
        p = dataclasses.replace(p, dropped_bytes=len(scan.data) - at, moved_to=moved.name)
        log.warning("shard %s: recovery dropped data: %s", self.directory, p.describe())
        return p

    # ---- segments -------------------------------------------------------------------------
    def _create_segment(self, index: int) -> None:
        path = self.directory / segment_name(index)
        header = encode_segment_header(self.next_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            _write_all(fd, [codec.frame_header(header), header])
            if self.fsync != "never":
                _fdatasync(fd)
        finally:
            os.close(fd)
        if self.fsync != "never":
            self._sync_dir()
        self.segments.append(SegmentInfo(index, self.next_seq, _HDR + len(header), path))

    def _open_active(self) -> None:
        fd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_APPEND)
        with self._lock:
            old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)

    def _roll(self) -> None:
        with self._lock:
            if self.fsync != "never" and self._dirty:
                self._sync_fd(self._fd)
        self._create_segment(self.segments[-1].index + 1)
        self._open_active()
        self._enforce_capacity()

    def _enforce_capacity(self) -> None:
        def over() -> bool:
            if len(self.segments) <= 1:
                return False
            if self.max_segments is not None and len(self.segments) > self.max_segments:
                return True
            if self.max_bytes is None:
                return False
            # room for the active segment to fill up: the bound holds between rolls too
            sealed = sum(s.size for s in self.segments[:-1])
            return sealed + max(self.segment_bytes, self.segments[-1].size) > self.max_bytes

        while over():
            seg = self.segments.pop(0)
            if self._on_drop is not None:
                self._on_drop(seg.index)
            fd = self._read_fds.pop(seg.index, None)
            if fd is not None:
                os.close(fd)
            os.unlink(seg.path)
            self.dropped_segments += 1
            log.info("%s: capacity: dropped %s (seq from %d)", self.directory, seg.path.name, seg.first_seq)

    # ---- append ---------------------------------------------------------------------------
    def append(self, payload: Any) -> tuple[int, int, int]:
        """Write one record; (segment, offset, seq) once written per the fsync policy."""
        return self.append_many([payload])[0]

    def append_many(self, payloads: Sequence[Any]) -> list[tuple[int, int, int]]:
        """Write records in order: one writev (and one fsync under "always") per segment
        touched. Returns (segment, offset, seq) per record once all are written."""
        self._check_open()
        out: list[tuple[int, int, int]] = []
        batch: list[Any] = []
        pending = 0
        batch_seq = self.next_seq
        try:
            for payload in payloads:
                header = codec.frame_header(payload)
                n = _HDR + memoryview(payload).nbytes
                seg = self.segments[-1]
                # roll when the frame does not fit, unless the segment has no record yet
                # (a record larger than segment_bytes gets a segment of its own)
                if seg.size + pending + n > self.segment_bytes and seg.first_seq < self.next_seq:
                    self._write(batch)
                    batch, pending, batch_seq = [], 0, self.next_seq
                    self._roll()
                    seg = self.segments[-1]
                out.append((seg.index, seg.size + pending, self.next_seq))
                self.next_seq += 1
                batch += [header, payload]
                pending += n
            self._write(batch)
        except BaseException:
            self.next_seq = batch_seq  # the unwritten records' seqs are free again
            raise
        return out

    def _write(self, parts: list[Any]) -> None:
        if not parts:
            return
        seg = self.segments[-1]
        try:
            written = _write_all(self._fd, parts)
        except OSError:
            # leave no partial frame behind a failed write: later appends must stay readable
            os.ftruncate(self._fd, seg.size)
            raise
        seg.size += written
        self._dirty = True
        if self.fsync == "always":
            self._sync_fd(self._fd)
        elif self.fsync == "interval" and self._syncer is None:
            self.sync_if_due()

    # ---- fsync ----------------------------------------------------------------------------
    def _sync_fd(self, fd: int) -> None:
        self._dirty = False
        _fdatasync(fd)
        self._last_sync = self._clock()
        self.fsyncs += 1

    def sync(self) -> None:
        """fdatasync the active segment now (any policy)."""
        with self._lock:
            if self._fd >= 0:
                self._sync_fd(self._fd)

    def sync_if_due(self) -> bool:
        """The "interval" policy: fsync if dirty and ``fsync_interval_s`` passed since the last."""
        with self._lock:
            if not self._dirty or self._fd < 0 or self._clock() - self._last_sync < self.fsync_interval_s:
                return False
            fd = os.dup(self._fd)  # a roll may close _fd while this fsync runs
            self._dirty = False
        try:
            _fdatasync(fd)
            self._last_sync = self._clock()
            self.fsyncs += 1
        except OSError:
            self._dirty = True
            log.exception("%s: background fsync failed", self.directory)
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _sync_dir_path(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as exc:  # some filesystems refuse fsync on directories
            if exc.errno not in (errno.EINVAL, errno.EBADF):
                raise
        finally:
            os.close(fd)

    def _sync_dir(self) -> None:
        self._sync_dir_path(self.directory)

    # ---- read -----------------------------------------------------------------------------
    def _reader(self, segment: int) -> int:
        fd = self._read_fds.get(segment)
        if fd is not None:
            self._read_fds.move_to_end(segment)
            return fd
        seg = next((s for s in reversed(self.segments) if s.index == segment), None)
        if seg is None:
            raise KeyError(f"segment {segment} is not retained in {self.directory}")
        fd = os.open(seg.path, os.O_RDONLY)
        self._read_fds[segment] = fd
        if len(self._read_fds) > 32:
            os.close(self._read_fds.popitem(last=False)[1])
        return fd

    def read_run(self, segment: int, frames: Sequence[tuple[int, int]]) -> list[bytes]:
        """Payloads of frames (offset, payload length) that lie back to back in a segment,
        with one pread; each CRC is checked (codec.CodecError on a mismatch)."""
        start = frames[0][0]
        end = frames[-1][0] + _HDR + frames[-1][1]
        data = os.pread(self._reader(segment), end - start, start)
        if len(data) != end - start:
            raise codec.CodecError(f"{segment_name(segment)}: short read at {start} ({len(data)} of {end - start})")
        mv = memoryview(data)
        out = []
        for off, n in frames:
            at = off - start
            length, crc = codec.FRAME_HEADER.unpack_from(mv, at)
            payload = mv[at + _HDR : at + _HDR + n]
            if length != n or zlib.crc32(payload) != crc:
                raise codec.CodecError(f"{segment_name(segment)} @ {off}: record changed on disk (crc/length)")
            out.append(bytes(payload))
        return out

    # ---- lifecycle --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"segment log {self.directory} is closed")

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def close(self) -> None:
        """Stop the sync thread, fsync (unless "never"), close every file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._syncer is not None and self._syncer is not threading.current_thread():
            self._syncer.join()
        with self._lock:
            if self._fd >= 0:
                if self.fsync != "never" and self._dirty:
                    self._sync_fd(self._fd)
                os.close(self._fd)
                self._fd = -1
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        os.close(self._lock_fd)  # releases the directory lock

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class ShardLockedError(RuntimeError):
    """Another SegmentLog (in this or another process) has the shard directory open."""


LOCK_FILE = ".lock"


def _lock_directory(directory: Path, timeout_s: float) -> int:
    """flock the directory's lock file: one writer per shard directory. The kernel drops
    the lock when its process dies, so a restarted shard actor gets it back (we wait up
    to ``timeout_s`` for a dying predecessor)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                raise ShardLockedError(
                    f"shard directory {directory} is open elsewhere (lock holder: {holder or 'unknown'}); "
                    "a shard directory has exactly one writer"
                ) from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd


def _sync_loop(ref: "weakref.ref[SegmentLog]", stop: threading.Event, period: float) -> None:
    """The "interval" policy's timer. Holds the log weakly so an unclosed log can be freed."""
    while not stop.wait(period):
        seg_log = ref()
        if seg_log is None:
            return
        seg_log.sync_if_due()
        del seg_log


def _write_all(fd: int, parts: list[Any]) -> int:
    """writev every part, resuming after partial writes; total bytes written."""
    views = [memoryview(p).cast("B") for p in parts]
    total = sum(len(v) for v in views)
    done = 0
    while views:
        n = os.writev(fd, views[:1024])  # IOV_MAX
        done += n
        if done == total:  # the usual case: one complete write
            break
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
    return done

"""Durable trajectory store: append-only segment logs, one Shard per directory. No Ray here.

    shard = Shard("/data/store/shard-000", shard_id=0, fsync="interval")
    ack = shard.append(codec.encode(traj))            # Ack(shard, segment, offset, seq)
    payloads, cursor = shard.read(cursor=0, max_records=256)
    shard_for("w0-e17", num_shards=4)                  # stable routing, same on every host

On disk, one directory per shard::

    seg-00000000.log seg-00000001.log ...      append-only segment files
    seg-00000003.log.dropped-000000001234      bytes that recovery cut off (kept, never read)
    seqs.json                                  seq reservation / next seq at a clean close
    .lock                                      flock of the one writer

    segment := frame(header) frame(record) frame(record) ...
    frame   := length (uint32 LE) | crc32 (uint32 LE) | payload              (codec.frame)
    header  := msgpack {"magic": "hindsight-segment", "version": 1, "first_seq": N}
    record  := codec.encode(trajectory)

Sequence numbers. Record k (0, 1, ...) of a segment has seq ``first_seq + k``; a new
segment starts at the shard's next seq. Seqs are therefore stable across restarts and
survive dropped segments and skipped corrupt records (they leave gaps). A reader's cursor
is a seq: ``read(cursor)`` returns records with seq >= cursor; a cursor older than the
oldest retained record starts at the oldest.

Seqs never rewind. A reader may have passed any seq that was ever acknowledged, so after
a recovery appends continue at ``max(recovered end, floor)``, in a new segment when that
is past the end of the last one. The floor is the larger of:
  * ``seqs.json`` (``SEQ_FILE``): a clean close records the exact next seq; while the log
    is open it holds a reservation ``R`` (PostgreSQL logs its sequences ahead the same
    way), rewritten once per ``SEQ_RESERVE`` appends and always before a seq >= R is
    handed out. After a crash appends continue at R: up to SEQ_RESERVE seqs are left
    unused, and a tail lost to damage (torn, truncated, a lost last segment) can never
    make its seqs reappear;
  * ``min_next_seq`` from the client (``start_store(min_next_seq={shard: cursor})``: a
    resumed run passes its saved cursors), which holds even when ``seqs.json`` is lost.
Without the floor, a truncated tail would let new records take seqs that a saved relabel
cursor had already passed: they would never be read.

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

Recovery. On start a Shard scans its segments in order and rebuilds its index. Every
loss is logged (WARNING), listed in ``Shard.recovery_report`` (``RecoveryReport.summary``
is the operator's line), and its bytes are copied to ``NAME.log.dropped-OFFSET`` (never
read again; ``tools.verify`` fails while such files exist, so the damage stays visible).
  * A bad frame whose length field is sane and is followed by a valid frame, or ends
    exactly at the end of the file, is skipped alone: it is overwritten in place by a
    tombstone frame of the same size (a payload starting with 0xc1, a byte msgpack never
    uses), so it keeps consuming its seq and every later record keeps its offset and seq.
    A frame ending at EOF is included: a full-length frame with wrong bytes is rot or a
    block the filesystem extended but never wrote; nothing after it can be lost by
    skipping it, and its seq may have been acknowledged.
  * A damaged length field: the scan re-enters the log at the next CRC-checked frame
    (``_resync``). If the bytes in between are one record whose CRC matches, only the
    length was hit: it is rewritten (``repaired``, nothing lost). If the length fields in
    between lead exactly to that frame, they are intact and the region is several damaged
    records in a row, each skipped alone. Otherwise, if the next
    segment's ``first_seq`` tells how many records the region held, they become that many
    tombstones. If nothing tells (the last segment), the records after it cannot keep
    their seqs, and the segment is cut there (a documented limit).
  * A torn tail (the file ends inside a frame, and no valid frame follows) is cut: the
    segment is truncated to its last good record. In the last segment this is the normal
    result of a crash during a write: that record was never acknowledged.
  * A segment whose header frame is unreadable is moved aside whole; a record with a good
    CRC that does not decode is skipped alone.

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
import json
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
import numpy as np

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

#: first payload byte of a tombstone: 0xc1 is the one byte msgpack never uses, so no
#: encoded trajectory (a msgpack array, 0x9N) can start with it
TOMBSTONE_TAG = 0xC1


def tombstone_frames(size: int, count: int) -> bytes:
    """``count`` valid frames filling exactly ``size`` bytes whose payloads mark skipped
    records. Recovery writes them over a damaged region so that it keeps its place (the
    offsets of later frames) and its seqs (one frame per record it held)."""
    if count < 1 or size < (_HDR + 1) * count:
        raise ValueError(f"cannot fill {size} bytes with {count} frame(s) of at least {_HDR + 1} bytes")
    last = size - (_HDR + 1) * (count - 1) - _HDR
    payloads = [bytes([TOMBSTONE_TAG])] * (count - 1) + [bytes([TOMBSTONE_TAG]) + bytes(last - 1)]
    return b"".join(codec.frame(p) for p in payloads)


def is_tombstone(payload: Any) -> bool:
    return len(payload) > 0 and payload[0] == TOMBSTONE_TAG


@dataclasses.dataclass(frozen=True)
class Problem:
    """A damaged region of a segment.

    kind: ``torn_tail`` | ``bad_length`` | ``crc_mismatch`` (from the frame scan),
    ``bad_header`` (the segment's header frame is unreadable: the whole file is unusable),
    ``seq_overlap`` (a header whose first_seq goes backwards), ``undecodable`` (a frame
    with a good CRC whose payload is not a trajectory; only that record is skipped),
    ``invalid`` (tools.verify: a decodable trajectory that fails codec.validate),
    ``dropped_file`` (tools.verify: bytes an earlier recovery moved aside).

    action: what recovery does (or did) about it: ``skipped`` (the region is replaced by
    tombstones, each consuming one seq; the records after it are kept), ``repaired`` (only
    the length field was wrong; the record is kept), ``cut`` (everything from ``offset`` to
    the end of the segment is moved aside), ``moved`` (the whole file is moved aside).
    records: the seqs the damage consumed (None: unknown).
    """

    segment: int
    offset: int
    kind: str
    detail: str
    dropped_bytes: int = 0
    seq: int | None = None
    moved_to: str | None = None
    action: str = ""
    records: int | None = None

    def describe(self) -> str:
        where = f"{segment_name(self.segment)} @ {self.offset}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        tail = f"; {self.dropped_bytes} bytes dropped" if self.dropped_bytes else ""
        if self.action:
            n = "" if self.records is None else f" {self.records} record(s)"
            tail += f"; {self.action}{n}"
        tail += f", moved to {self.moved_to}" if self.moved_to else ""
        return f"{where}: {self.kind}: {self.detail}{tail}"


@dataclasses.dataclass
class SegmentScan:
    """One segment file read whole: its header, good frames, and the damage found.

    ``frames``/``seqs``: the records after the header (tombstones excluded) and their seqs.
    ``end_seq``: one past the last seq this segment accounts for (records, tombstones and
    skipped regions). ``holes``: damaged regions skipped or repaired (later records keep
    their place). ``problem``: the tail from ``valid_end`` on that must be cut (torn tail,
    or damage no later frame boundary could be found after), or an unusable header.
    """

    index: int
    path: Path
    data: bytes
    first_seq: int | None  # None: bad or torn header
    frames: list[tuple[int, int]]  # (frame offset, payload length)
    valid_end: int  # offset just past the last kept frame (0 with a bad header)
    problem: Problem | None
    seqs: list[int] = dataclasses.field(default_factory=list)
    end_seq: int = 0
    holes: list[Problem] = dataclasses.field(default_factory=list)
    tombstones: int = 0

    def payload(self, offset: int, length: int) -> memoryview:
        return memoryview(self.data)[offset + _HDR : offset + _HDR + length]

    def records(self) -> Iterator[tuple[int, int, memoryview]]:
        """(seq, frame offset, payload view) of every record after the header."""
        assert self.first_seq is not None
        for seq, (off, n) in zip(self.seqs, self.frames):
            yield seq, off, self.payload(off, n)

    @property
    def problems(self) -> list[Problem]:
        return self.holes + ([self.problem] if self.problem is not None else [])


def _frame_at(mv: memoryview, pos: int) -> int:
    """Payload length of a valid frame at ``pos`` (sane length, inside the buffer, CRC
    matches), else -1."""
    size = len(mv)
    if size - pos < _HDR:
        return -1
    n, crc = codec.FRAME_HEADER.unpack_from(mv, pos)
    if n == 0 or n > codec.MAX_RECORD_BYTES or pos + _HDR + n > size:
        return -1
    return n if zlib.crc32(mv[pos + _HDR : pos + _HDR + n]) == crc else -1


def _resync(mv: memoryview, start: int, chunk: int = 1 << 20) -> int | None:
    """The first offset >= ``start`` where a valid frame begins, or None.

    A length-prefixed log cannot be walked past a damaged length field, but it can be
    re-entered: a CRC-checked frame found at an offset is a frame boundary (a false match
    needs a 1-in-2^32 CRC coincidence). The length field of every candidate offset is
    computed vectorised; only plausible lengths get a CRC check."""
    size = len(mv)
    stop = size - _HDR  # a candidate needs a header and at least one payload byte
    a = np.frombuffer(mv, dtype=np.uint8)
    for c0 in range(start, stop, chunk):
        c1 = min(c0 + chunk, stop)
        b = a[c0 : c1 + 3].astype(np.int64)
        n = b[: c1 - c0] | b[1 : c1 - c0 + 1] << 8 | b[2 : c1 - c0 + 2] << 16 | b[3 : c1 - c0 + 3] << 24
        pos = np.arange(c0, c1)
        fits = (n > 0) & (pos + _HDR + n <= size)
        cand, n = pos[fits], n[fits]
        # and what follows is the end of the file or another plausible header: over random
        # bytes this leaves ~1 candidate in 10^5, so few CRCs are computed
        nxt = cand + _HDR + n
        room = size - nxt >= _HDR + 1
        at = np.where(room, nxt, 0)
        n2 = a[at].astype(np.int64) | a[at + 1].astype(np.int64) << 8 | a[at + 2].astype(np.int64) << 16 | a[at + 3].astype(np.int64) << 24
        plausible = (nxt == size) | (room & (n2 > 0) & (nxt + _HDR + n2 <= size))
        for q in cand[plausible].tolist():
            if _frame_at(mv, q) > 0:
                return q
    return None


def _length_chain(mv: memoryview, start: int, stop: int) -> list[tuple[int, int]]:
    """The frames (start, end) that the length fields from ``start`` walk through when they
    land exactly on ``stop``; [] when they do not (then a length field itself is damaged).
    A damaged length landing exactly on the next valid frame is a ~2^-32 coincidence."""
    out, pos = [], start
    while stop - pos >= _HDR + 1:
        n, _ = codec.FRAME_HEADER.unpack_from(mv, pos)
        if n == 0 or pos + _HDR + n > stop:
            return []
        out.append((pos, pos + _HDR + n))
        pos += _HDR + n
    return out if pos == stop else []


def scan_segment(index: int, path: str | os.PathLike, next_first_seq: int | None = None) -> SegmentScan:
    """Read one segment file and check its framing (not its payloads). Never modifies it.

    ``next_first_seq``: the first seq of the following segment when it has a readable
    header; it tells how many records a damaged region of unknown extent held.

    A bad frame whose length field is sane and is followed by a valid frame (or ends
    exactly at the end of the file) is skipped alone: its seq stays consumed. Otherwise
    the scan re-enters the log at the next valid frame: if the skipped bytes hold exactly
    one frame with a matching CRC only the length field was damaged (repaired); if their
    length fields lead exactly to that frame, they are several damaged records, each
    skipped alone; if the following segment's first_seq tells how many records the
    region held, it is skipped with that many seqs. When neither holds, the records after the damage cannot keep
    their seqs, and the segment is cut there like a torn tail.
    """
    with open(path, "rb") as f:
        data = f.read()
    frames_it = codec.iter_frames(data)
    it = iter(frames_it)
    first = next(it, None)
    if first is None:
        p = frames_it.problem
        kind = "torn_tail" if p is None or p.is_torn_tail else "bad_header"
        detail = "empty segment (no header)" if p is None else f"header frame: {p.detail}"
        return SegmentScan(index, Path(path), data, None, [], 0, Problem(index, 0, kind, detail, len(data), action="moved"))
    try:
        first_seq = decode_segment_header(first[1])
    except ValueError as exc:
        return SegmentScan(
            index, Path(path), data, None, [], 0, Problem(index, 0, "bad_header", str(exc), len(data), action="moved")
        )
    mv = memoryview(data)
    size = len(data)
    pos = first[0] + _HDR + len(first[1])
    frames: list[tuple[int, int]] = []
    seqs: list[int] = []
    holes: list[Problem] = []
    k = 0  # seqs accounted for after the header
    tombstones = 0
    unknown: list[tuple[int, int, int, int, int]] = []  # (pos, hole index, frames before, k before, tombstones before)
    tail: Problem | None = None
    while pos < size:
        n = _frame_at(mv, pos)
        if n > 0:
            if is_tombstone(mv[pos + _HDR : pos + _HDR + 1]):
                tombstones += 1
            else:
                frames.append((pos, n))
                seqs.append(first_seq + k)
            k += 1
            pos += _HDR + n
            continue
        if size - pos < _HDR:
            tail = Problem(index, pos, "torn_tail", f"{size - pos} bytes left, a frame header needs {_HDR}", size - pos, seq=first_seq + k)
            break
        length, crc = codec.FRAME_HEADER.unpack_from(mv, pos)
        end = pos + _HDR + length
        sane = 0 < length <= codec.MAX_RECORD_BYTES
        if sane and end <= size and (end == size or _frame_at(mv, end) > 0):
            # a corrupt payload (or CRC field) inside an intact frame: skip it alone
            detail = f"crc32 {zlib.crc32(mv[pos + _HDR : end]):#010x} != stored {crc:#010x}"
            holes.append(Problem(index, pos, "crc_mismatch", detail, end - pos, seq=first_seq + k, action="skipped", records=1))
            k += 1
            pos = end
            continue
        kind = "bad_length" if not sane else "torn_tail" if end > size else "crc_mismatch"
        detail = (
            f"length field {length} outside (0, {codec.MAX_RECORD_BYTES}]" if not sane
            else f"record of {length} bytes but only {size - pos - _HDR} remain" if end > size
            else f"crc32 mismatch and no frame boundary after the record ({length} bytes)"
        )
        q = _resync(mv, pos + _HDR + 1)
        if q is None:
            # nothing valid follows: a write cut short (the normal crash case), or damage
            # that runs to the end of the file
            tail = Problem(index, pos, kind, detail, size - pos, seq=first_seq + k)
            break
        if kind == "torn_tail":  # the length runs past the end, yet valid frames follow
            kind, detail = "bad_length", f"length field {length} runs past the end of the file"
        if zlib.crc32(mv[pos + _HDR : q]) == crc:
            # the bytes up to the next frame are one record with a matching CRC: only its
            # length field is damaged
            holes.append(Problem(
                index, pos, "bad_length", f"length field {length}, the record holds {q - pos - _HDR} bytes",
                0, seq=first_seq + k, action="repaired", records=0,
            ))
            frames.append((pos, q - pos - _HDR))
            seqs.append(first_seq + k)
            k += 1
            pos = q
            continue
        chain = _length_chain(mv, pos, q)
        if chain:
            # several damaged records back to back: their length fields lead exactly to the
            # next valid frame, so they are intact and count the records; skip each alone
            for at, end_at in chain:
                detail = f"crc32 mismatch ({len(chain)} damaged records in a row)"
                holes.append(Problem(index, at, "crc_mismatch", detail, end_at - at, seq=first_seq + k, action="skipped", records=1))
                k += 1
            pos = q
            continue
        unknown.append((pos, len(holes), len(frames), k, tombstones))
        holes.append(Problem(index, pos, kind, detail + "; resynchronised at the next valid frame", q - pos,
                             seq=first_seq + k, action="skipped"))
        pos = q
    if unknown:
        upos, h, nframes, k_before, tomb_before = unknown[0]
        count = None if next_first_seq is None else next_first_seq - first_seq - k
        region = holes[h].dropped_bytes
        if len(unknown) == 1 and tail is None and count is not None and count >= 1 and region >= (_HDR + 1) * count:
            # the next segment's first_seq says how many records the region held
            holes[h] = dataclasses.replace(holes[h], records=count)
            seqs[nframes:] = [s + count for s in seqs[nframes:]]
            holes[h + 1 :] = [dataclasses.replace(p, seq=p.seq + count) for p in holes[h + 1 :]]
            k += count
        else:
            # how many records the region held is unknown: the records after it cannot be
            # given their seqs, so the segment ends there
            why = "no following segment tells" if count is None else "the following segment does not tell"
            old = holes[h]
            tail = Problem(index, upos, old.kind, f"{old.detail.split(';')[0]}; how many records the damaged bytes held is unknown ({why})",
                           size - upos, seq=old.seq)
            del frames[nframes:], seqs[nframes:], holes[h:]
            k, tombstones = k_before, tomb_before
    valid_end = tail.offset if tail is not None else size
    if tail is not None:
        tail = dataclasses.replace(tail, action="cut")
    scan = SegmentScan(index, Path(path), data, first_seq, frames, valid_end, tail, seqs, first_seq + k, holes, tombstones)
    return scan


def scan_shard(directory: str | os.PathLike) -> Iterator[SegmentScan]:
    """Scans of every segment of a shard directory, oldest first, one file in memory at a time."""
    found = list_segments(directory)
    for i, (index, path) in enumerate(found):
        nxt = peek_first_seq(found[i + 1][1]) if i + 1 < len(found) else None
        yield scan_segment(index, path, nxt)


def peek_first_seq(path: str | os.PathLike) -> int | None:
    """first_seq from a segment's header frame, or None when it is unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HDR)
            if len(head) < _HDR:
                return None
            n, _ = codec.FRAME_HEADER.unpack(head)
            if not 0 < n <= 4096:
                return None
            rest = f.read(n)
        if _frame_at(memoryview(head + rest), 0) != n:
            return None
        return decode_segment_header(rest)
    except (OSError, ValueError):
        return None


@dataclasses.dataclass
class RecoveryReport:
    """What a Shard found when it rebuilt its index from disk.

    ``recovered_next_seq``: one past the last seq the segments account for;
    ``next_seq``: where appends continue, never below ``seq_floor`` (see "Sequence
    numbers" in the module doc); ``clean``: whether the last writer closed the log
    (None: no seq file, e.g. a new directory)."""

    directory: str
    shard: int = 0
    segments: int = 0
    records: int = 0
    bytes: int = 0
    first_seq: int | None = None
    next_seq: int = 0
    recovered_next_seq: int = 0
    seq_floor: int = 0
    clean: bool | None = None
    elapsed_s: float = 0.0
    started_at: float = dataclasses.field(default_factory=time.time)  # wall clock: tells restarts apart
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def dropped_bytes(self) -> int:
        """Bytes moved to ``.dropped-*`` files by this recovery."""
        return sum(p.dropped_bytes for p in self.problems)

    @property
    def dropped_records(self) -> int:
        """Records known lost: skipped frames, undecodable records, and records of cut
        tails or moved segments where their number is known (see ``Problem.records``)."""
        return sum(p.records or 0 for p in self.problems)

    def summary(self) -> str:
        """One line for an operator: what was lost and where the bytes went."""
        kinds = collections.Counter(p.kind for p in self.problems)
        moved = sorted({p.moved_to for p in self.problems if p.moved_to})
        crash = (
            "; after a crash a torn tail is usually a write that was never acknowledged"
            if self.clean is False and "torn_tail" in kinds else ""
        )
        return (
            f"store shard {self.shard} ({self.directory}): recovery found {len(self.problems)} damaged region(s) "
            f"({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))}): {self.dropped_records} record(s) known lost, "
            f"{self.dropped_bytes} bytes moved to {', '.join(moved) or '-'}; {self.records} records kept, "
            f"appends continue at seq {self.next_seq}{crash}"
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(ok=self.ok, dropped_bytes=self.dropped_bytes, dropped_records=self.dropped_records, summary=self.summary())
        return d


#: per shard directory: {"reserved": R, "next_seq": N or null}; see "Sequence numbers"
SEQ_FILE = "seqs.json"
#: seqs reserved ahead in SEQ_FILE (one small file write per this many appends)
SEQ_RESERVE = 4096


def read_seq_file(directory: str | os.PathLike) -> tuple[int, int | None] | None:
    """(reserved, next_seq at a clean close or None) from a shard's SEQ_FILE; None when
    there is none (a new directory, or one written before the file existed)."""
    path = Path(directory) / SEQ_FILE
    try:
        d = json.loads(path.read_text())
        reserved = int(d["reserved"])
        nxt = None if d.get("next_seq") is None else int(d["next_seq"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%r); seqs are floored by the segments and the client only", path, exc)
        return None
    return reserved, nxt


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
        min_next_seq: int = 0,
    ):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if segment_bytes < 64:
            raise ValueError(f"segment_bytes must be >= 64, got {segment_bytes}")
        if max_segments is not None and max_segments < 1:
            raise ValueError(f"max_segments must be >= 1 or None, got {max_segments}")
        if fsync_interval_s < 0:
            raise ValueError(f"fsync_interval_s must be >= 0, got {fsync_interval_s}")
        if min_next_seq < 0:
            raise ValueError(f"min_next_seq must be >= 0, got {min_next_seq}")
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
        self._reserved = 0  # seqs below this may have been issued (SEQ_FILE)
        self.fsyncs = 0
        self.dropped_segments = 0
        self._fd = -1  # write fd of the active (last) segment
        self._read_fds: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._lock = threading.Lock()  # guards _fd against the sync thread
        self._dirty = False
        self._last_sync = clock()
        self._closed = True  # until the lock is held
        self._ready = False
        self._syncer: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock_fd = _lock_directory(self.directory, lock_timeout_s)
        self._closed = False
        try:
            self.recovery_report = self._recover(on_record, min_next_seq)
            self._enforce_capacity()
            self._ready = True  # close() may record a clean close from now on
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

    # ---- recovery ------------------------------------------------------------------------
    def _recover(self, on_record: Callable | None, min_next_seq: int) -> RecoveryReport:
        t0 = time.perf_counter()
        report = RecoveryReport(str(self.directory))
        seq_file = read_seq_file(self.directory)
        found = list_segments(self.directory)
        last_end: int | None = None  # end_seq of the last segment kept, when it is the last file
        for i, (index, path) in enumerate(found):
            last = i == len(found) - 1
            scan = scan_segment(index, path, None if last else peek_first_seq(found[i + 1][1]))
            report.segments += 1
            if scan.first_seq is not None and scan.first_seq < self.next_seq:
                scan.problem = Problem(
                    index, 0, "seq_overlap",
                    f"first_seq {scan.first_seq} < {self.next_seq} reached by older segments",
                    len(scan.data), action="moved",
                )
                scan.first_seq, scan.frames, scan.seqs, scan.holes, scan.valid_end = None, [], [], [], 0
            if scan.first_seq is None:
                if last and scan.problem.kind == "torn_tail" and len(scan.data) < 64:
                    # crash while creating this segment: not a loss; it is re-created below
                    log.info("%s: %s; re-creating it", path, scan.problem.detail)
                    os.unlink(path)
                    continue
                report.problems.append(self._move_aside(scan, scan.problem, 0, len(scan.data)))
                continue
            for hole in scan.holes:
                report.problems.append(self._patch(scan, hole))
            for seq, off, payload in scan.records():
                why = on_record(seq, index, off, payload) if on_record else None
                if why is not None:
                    p = Problem(index, off, "undecodable", why, 0, seq=seq, action="skipped", records=1)
                    log.warning("shard %s: skipping record: %s", self.directory, p.describe())
                    report.problems.append(p)
                else:
                    report.records += 1
            if scan.problem is not None:
                report.problems.append(self._move_aside(scan, scan.problem, scan.valid_end, len(scan.data)))
            self.segments.append(SegmentInfo(index, scan.first_seq, scan.valid_end, Path(path)))
            self.next_seq = scan.end_seq
            last_end = scan.end_seq if last else None
        report.recovered_next_seq = self.next_seq
        # the seq floor: never hand out again a seq that may have been issued before
        floor = min_next_seq
        if seq_file is not None:
            reserved, clean_next = seq_file
            report.clean = clean_next is not None
            floor = max(floor, clean_next if clean_next is not None else reserved)
        report.seq_floor = floor
        if floor > self.next_seq:
            if report.problems or report.clean:
                log.warning(
                    "shard %s: the segments end at seq %d but seqs up to %d were issued before (%s); "
                    "appends continue at %d so that no seq is reused",
                    self.directory, self.next_seq, floor - 1,
                    "clean close" if report.clean else "client floor or seq reservation", floor,
                )
            tail = [k for k, p in enumerate(report.problems) if p.action in ("cut", "moved")]
            if report.clean and tail and report.problems[tail[-1]].records is None:
                # a clean close knew the exact end: the records lost at the tail are these
                p = report.problems[tail[-1]]
                report.problems[tail[-1]] = dataclasses.replace(p, records=floor - self.next_seq)
            self.next_seq = floor
        if self.segments and last_end is not None and last_end == self.next_seq:
            pass  # appends continue in the last segment
        elif self.segments and last_end is not None and self.segments[-1].first_seq == last_end:
            # the last segment holds nothing (a header): start it again at the new seq
            seg = self.segments.pop()
            os.unlink(seg.path)
            self._create_segment(seg.index)
        else:
            self._create_segment(found[-1][0] + 1 if found else 0)
        self._open_active()
        self._write_seq_file(self.next_seq + SEQ_RESERVE, None)
        report.bytes = sum(s.size for s in self.segments)
        report.first_seq = self.segments[0].first_seq if self.segments else None
        report.next_seq = self.next_seq
        report.elapsed_s = time.perf_counter() - t0
        return report

    def _save_aside(self, scan: SegmentScan, start: int, end: int) -> Path:
        """Copy bytes [start:end) of a segment to ``NAME.dropped-START[.k]``."""
        moved = scan.path.with_name(f"{scan.path.name}.dropped-{start:012d}")
        k = 1
        while moved.exists():
            moved = scan.path.with_name(f"{scan.path.name}.dropped-{start:012d}.{k}")
            k += 1
        with open(moved, "wb") as f:
            f.write(memoryview(scan.data)[start:end])
            if self.fsync != "never":
                _fdatasync(f.fileno())
        return moved

    def _move_aside(self, scan: SegmentScan, p: Problem, at: int, end: int) -> Problem:
        """Move bytes [at:] of a damaged segment aside and truncate it there (delete it at 0)."""
        moved = self._save_aside(scan, at, end)
        if at == 0:
            os.unlink(scan.path)
        else:
            os.truncate(scan.path, at)
        self._sync_dir()
        p = dataclasses.replace(p, dropped_bytes=end - at, moved_to=moved.name)
        log.warning("shard %s: recovery dropped data: %s", self.directory, p.describe())
        return p

    def _patch(self, scan: SegmentScan, hole: Problem) -> Problem:
        """Skip a damaged region in place: its bytes go aside, and tombstone frames (one
        per record it held, so later records keep their seqs) or a repaired length field
        take its place. The file's size and every other frame's offset stay as they are."""
        if hole.action == "repaired":
            n = dict(scan.frames)[hole.offset]
            moved = self._save_aside(scan, hole.offset, hole.offset + _HDR)  # the damaged frame header
            patch = n.to_bytes(4, "little")
        else:
            moved = self._save_aside(scan, hole.offset, hole.offset + hole.dropped_bytes)
            patch = tombstone_frames(hole.dropped_bytes, hole.records or 1)
        fd = os.open(scan.path, os.O_WRONLY)
        try:
            os.pwrite(fd, patch, hole.offset)
            if self.fsync != "never":
                _fdatasync(fd)
        finally:
            os.close(fd)
        self._sync_dir()
        p = dataclasses.replace(hole, moved_to=moved.name)
        log.warning("shard %s: recovery %s damaged data: %s", self.directory, hole.action, p.describe())
        return p

    def _write_seq_file(self, reserved: int, next_seq: int | None) -> None:
        """Persist the seq reservation (and, at a clean close, the exact next seq)."""
        path = self.directory / SEQ_FILE
        tmp = path.with_name(SEQ_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps({"reserved": reserved, "next_seq": next_seq}) + "\n")
            f.flush()
            if self.fsync != "never":
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.fsync != "never":
            self._sync_dir()
        self._reserved = reserved

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
        if self.next_seq + len(payloads) > self._reserved:
            self._write_seq_file(self.next_seq + len(payloads) + SEQ_RESERVE, None)
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
        if self._ready:
            try:  # a clean close records the exact next seq
                self._write_seq_file(self._reserved, self.next_seq)
            except OSError as exc:
                log.warning("%s: could not record the clean close (%s)", self.directory, exc)
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

"""msgpack codec, disk framing and validation of trajectories.

    payload = encode(traj)            # bytes; a valid msgpack document
    traj2 = decode(payload)           # arrays are zero-copy views of ``payload``
    record = frame(payload)           # length | crc32 | payload  (what the segment log holds)
    frames = iter_frames(buf)
    for offset, payload in frames: ...
    if frames.problem is not None: ...   # torn tail or corrupt record, as a FrameProblem
    validate(traj)                    # InvalidTrajectoryError naming the field, or None

Payload layout (format version 1): one msgpack array

    [1, bin(meta), bin(task), bin(obs), bin(actions), bin(rewards), bin(terminated),
     bin(reward_inputs)]

    meta = msgpack map {"episode_id", "worker_id", "policy_version", "family",
                        "truncated", "created_at", "task_id", "phase",
                        "arrays": [[field, dtype.str, shape], ...]}   # order of the bins

Why the arrays are top-level ``bin`` items and meta is itself wrapped in a ``bin``:
msgpack-python copies every ``bin`` it unpacks. Here we parse the outer array and the bin
headers ourselves (a few bytes each), unpack only the small meta slice with msgpack, and
hand numpy a view (``np.frombuffer``) of each array's bytes at its offset in the payload.
Any msgpack reader can still read the payload, so the format stays language neutral.

Decoded arrays share memory with the buffer passed to ``decode``: they are READ-ONLY when
it is ``bytes`` (the usual case), may be unaligned, and keep the buffer alive. Call
``np.array(x)`` for a private, writable, aligned copy. dtype strings carry byte order
(``'<f4'``), so a payload decodes identically on any machine.

Trajectories with T = 0 steps encode and decode (the codec is shape-agnostic), but
``validate`` rejects them: an episode without a step holds no transition to learn from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import struct
import zlib
from typing import Any, BinaryIO, Callable, Iterator, Literal, NamedTuple

import msgpack
import numpy as np

from relabel_service.core import Trajectory

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: the array fields of a Trajectory, in payload order (task first: indexing peeks it)
ARRAY_FIELDS = ("task", "obs", "actions", "rewards", "terminated", "reward_inputs")
_ARRAY_KINDS = frozenset("biufc")  # bool, signed, unsigned, float, complex

FRAME_HEADER = struct.Struct("<II")  # payload length, crc32(payload); little endian
#: a length field above this is corruption, not a record (a trajectory is far smaller)
MAX_RECORD_BYTES = 1 << 30


class CodecError(ValueError):
    """A payload that is not an encoded trajectory (truncated, wrong version, garbage)."""


class InvalidTrajectoryError(ValueError):
    """A trajectory the store refuses; the message names the trajectory and the field."""


# ---- encode / decode --------------------------------------------------------------------


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _as_array(field: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in _ARRAY_KINDS:
        raise CodecError(f"field {field!r}: cannot encode dtype {arr.dtype} (numeric or bool only)")
    return np.ascontiguousarray(arr)


def encode(traj: Trajectory) -> bytes:
    """Trajectory -> msgpack payload (one copy of each array, into the returned bytes)."""
    arrays = [_as_array(f, getattr(traj, f)) for f in ARRAY_FIELDS]
    meta = {
        "episode_id": str(traj.episode_id),
        "worker_id": int(traj.worker_id),
        "policy_version": int(traj.policy_version),
        "family": str(traj.family),
        "truncated": bool(traj.truncated),
        "created_at": float(traj.created_at),
        "task_id": int(traj.task_id),
        "phase": str(traj.phase),
        "arrays": [[f, a.dtype.str, list(a.shape)] for f, a in zip(ARRAY_FIELDS, arrays)],
    }
    meta_bytes = msgpack.packb(meta, use_bin_type=True)
    parts: list[Any] = [bytes([0x90 | (2 + len(arrays)), FORMAT_VERSION])]
    parts += [_bin_header(len(meta_bytes)), meta_bytes]
    for a in arrays:
        parts += [_bin_header(a.nbytes), a]  # join reads the array's buffer directly
    return b"".join(parts)


_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}


def _read_bin(mv: memoryview, pos: int) -> tuple[int, int]:
    """(start, end) of the bin item at ``pos``."""
    if pos >= len(mv):
        raise CodecError(f"payload ends at byte {pos}, expected a bin item")
    tag = mv[pos]
    width = _BIN_WIDTH.get(tag)
    if width is None:
        raise CodecError(f"byte {pos}: expected a msgpack bin item, found tag 0x{tag:02x}")
    start = pos + 1 + width
    if start > len(mv):
        raise CodecError(f"byte {pos}: bin header runs past the payload end ({len(mv)})")
    n = mv[pos + 1] if width == 1 else int.from_bytes(mv[pos + 1 : start], "big")
    if start + n > len(mv):
        raise CodecError(f"byte {pos}: bin of {n} bytes runs past the payload end ({len(mv)})")
    return start, start + n


def _parse(buf: Any) -> tuple[memoryview, dict, int]:
    """(payload view, meta, offset of the first array bin)."""
    mv = memoryview(buf).cast("B")
    if len(mv) < 2:
        raise CodecError(f"payload of {len(mv)} bytes is too short")
    if mv[0] & 0xF0 != 0x90 or mv[0] & 0x0F != 2 + len(ARRAY_FIELDS):
        raise CodecError(f"payload does not start with a {2 + len(ARRAY_FIELDS)}-item array")
    if mv[1] != FORMAT_VERSION:
        raise CodecError(f"unsupported trajectory format version {mv[1]} (expected {FORMAT_VERSION})")
    start, end = _read_bin(mv, 2)
    try:
        meta = msgpack.unpackb(mv[start:end], raw=False)
        names = [a[0] for a in meta["arrays"]]
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"unreadable trajectory metadata: {exc!r}") from exc
    if not isinstance(meta, dict) or names != list(ARRAY_FIELDS):
        raise CodecError(f"trajectory metadata lists arrays {names}, expected {list(ARRAY_FIELDS)}")
    return mv, meta, end


_dtype_cache: dict[str, np.dtype] = {}


def _dtype(name: str) -> np.dtype:
    dtype = _dtype_cache.get(name)
    if dtype is None:
        dtype = np.dtype(name)
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"dtype {dtype} is not numeric")
        if len(_dtype_cache) < 256:  # only a handful of dtypes ever occur
            _dtype_cache[name] = dtype
    return dtype


def _view(mv: memoryview, pos: int, spec: list, field: str) -> tuple[np.ndarray, int]:
    start, end = _read_bin(mv, pos)
    try:
        shape = tuple(spec[2])
        if min(shape, default=0) < 0:  # np.ndarray would infer a -1 dim from the buffer
            raise ValueError(f"negative dimension in {shape}")
        # a view of the payload; np.ndarray checks that the buffer holds it
        arr = np.ndarray(shape, _dtype(spec[1]), mv, start)
    except (TypeError, ValueError, IndexError) as exc:
        raise CodecError(f"field {field!r}: bad dtype/shape {spec[1:]!r}: {exc}") from None
    if arr.nbytes != end - start:
        raise CodecError(f"field {field!r}: {end - start} bytes do not hold {arr.shape} of {arr.dtype.str}")
    return arr, end


def peek(buf: Any) -> tuple[str, float]:
    """(episode_id, created_at) of a payload, from its metadata alone (no array views, no
    Trajectory): what choosing the newest records, or skipping ones already held, needs."""
    _, meta, _ = _parse(buf)
    return str(meta["episode_id"]), float(meta["created_at"])


def decode(buf: Any) -> Trajectory:
    """msgpack payload -> Trajectory whose arrays are views of ``buf`` (see module doc)."""
    mv, meta, pos = _parse(buf)
    arrays = {}
    for field, spec in zip(ARRAY_FIELDS, meta["arrays"]):
        arrays[field], pos = _view(mv, pos, spec, field)
    if pos != len(mv):
        raise CodecError(f"{len(mv) - pos} trailing bytes after the last array")
    try:
        return Trajectory(
            episode_id=meta["episode_id"],
            worker_id=meta["worker_id"],
            policy_version=meta["policy_version"],
            family=meta["family"],
            truncated=meta["truncated"],
            created_at=meta["created_at"],
            task_id=meta.get("task_id", -1),  # absent in records written before meta-RL
            phase=meta.get("phase", ""),
            **arrays,
        )
    except KeyError as exc:
        raise CodecError(f"trajectory metadata lacks {exc}") from exc


class RecordHeader(NamedTuple):
    """What the store indexes without decoding the whole trajectory."""

    episode_id: str
    family: str
    task: np.ndarray  # [Z], a view of the payload
    steps: int  # T


def peek_header(buf: Any) -> RecordHeader:
    """Episode id, family, task and T of a payload: meta plus the task bytes only."""
    mv, meta, pos = _parse(buf)
    task, _ = _view(mv, pos, meta["arrays"][0], "task")
    try:
        steps = int(meta["arrays"][2][2][0])  # actions shape [T, A]
        return RecordHeader(str(meta["episode_id"]), str(meta["family"]), task, steps)
    except (KeyError, IndexError, TypeError) as exc:
        raise CodecError(f"trajectory metadata is incomplete: {exc!r}") from exc


# ---- framing --------------------------------------------------------------------------


def frame(payload: Any) -> bytes:
    """length (uint32 LE) | crc32 (uint32 LE) | payload."""
    return frame_header(payload) + bytes(payload)


def frame_header(payload: Any) -> bytes:
    """The 8 bytes that precede ``payload`` on disk (for writev without concatenating)."""
    n = len(payload) if isinstance(payload, bytes) else memoryview(payload).nbytes
    if not 0 < n <= MAX_RECORD_BYTES:
        raise ValueError(f"record payload of {n} bytes is outside (0, {MAX_RECORD_BYTES}]")
    return FRAME_HEADER.pack(n, zlib.crc32(payload))


FrameProblemKind = Literal["torn_tail", "bad_length", "crc_mismatch"]


@dataclasses.dataclass(frozen=True)
class FrameProblem:
    """Why a frame scan stopped early.

    ``torn_tail``: the buffer ends inside a record (a write cut short by a crash).
    ``bad_length``: the length field is 0 or absurd (corruption, e.g. a zero-filled block).
    ``crc_mismatch``: the payload does not match its checksum (corruption).
    Everything from ``offset`` to the end of the buffer (``dropped_bytes``) is unusable.
    """

    kind: FrameProblemKind
    offset: int
    detail: str
    dropped_bytes: int

    @property
    def is_torn_tail(self) -> bool:
        return self.kind == "torn_tail"


class FrameIter:
    """Iterates ``(offset, payload view)`` over the frames of a buffer; see ``iter_frames``.

    After iteration, ``end`` is the offset just past the last good frame and ``problem``
    is None (clean end of buffer) or the FrameProblem that stopped the scan.
    """

    def __init__(self, buf: Any, offset: int = 0):
        self.buf = memoryview(buf).cast("B")
        self.start = offset
        self.end = offset
        self.problem: FrameProblem | None = None

    def __iter__(self) -> Iterator[tuple[int, memoryview]]:
        mv, size, pos = self.buf, len(self.buf), self.start
        unpack, crc32 = FRAME_HEADER.unpack_from, zlib.crc32
        while pos < size:
            if size - pos < FRAME_HEADER.size:
                self._stop("torn_tail", pos, f"{size - pos} bytes left, a frame header needs 8")
                return
            n, crc = unpack(mv, pos)
            if n == 0 or n > MAX_RECORD_BYTES:
                self._stop("bad_length", pos, f"length field {n} outside (0, {MAX_RECORD_BYTES}]")
                return
            body = pos + FRAME_HEADER.size
            if body + n > size:
                self._stop("torn_tail", pos, f"record of {n} bytes but only {size - body} remain")
                return
            payload = mv[body : body + n]
            if crc32(payload) != crc:
                self._stop("crc_mismatch", pos, f"crc32 {crc32(payload):#010x} != stored {crc:#010x}")
                return
            yield pos, payload
            pos = self.end = body + n

    def _stop(self, kind: FrameProblemKind, pos: int, detail: str) -> None:
        self.problem = FrameProblem(kind, pos, detail, len(self.buf) - pos)


def iter_frames(source: Any, offset: int = 0) -> FrameIter:
    """Frames of a bytes-like object, a binary file object, or a path (read whole).

    Offsets are absolute positions in the buffer/file. The scan stops at the first bad
    frame: a length-prefixed log cannot be resynchronised past a damaged length.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            source = f.read()
    elif hasattr(source, "read"):
        f: BinaryIO = source
        f.seek(0)
        source = f.read()
    return FrameIter(source, offset)


# ---- validation -----------------------------------------------------------------------

#: field -> ndim; each is [T, ...] unless noted in _validate_shapes
_NDIM = {"task": 1, "obs": 2, "actions": 2, "rewards": 1, "terminated": 1, "reward_inputs": 2}
_FINITE_FIELDS = ("obs", "actions", "rewards", "reward_inputs", "task")
_DIM_ATTR = {"obs": "obs_dim", "actions": "action_dim", "task": "task_dim", "reward_inputs": "reward_input_dim"}

_warned_no_registry = False


def default_family_lookup() -> Callable[[str], Any] | None:
    """``envs.get_family`` when the registry is importable, else None (dims unchecked)."""
    global _warned_no_registry
    try:
        from envs import get_family  # lazily: the registry imports gymnasium/mujoco
    except ImportError as exc:
        if not _warned_no_registry:
            log.warning("envs.get_family is unavailable (%s): family checks are skipped", exc)
            _warned_no_registry = True
        return None
    return get_family


def validate(
    traj: Trajectory,
    family: Any = None,
    *,
    lookup: Callable[[str], Any] | None = None,
) -> None:
    """Raise InvalidTrajectoryError (naming the field) unless ``traj`` is storable.

    ``family``: a TaskFamily (or any object with obs_dim, action_dim, task_dim,
    reward_input_dim, name), a family name, or None to look up ``traj.family``.
    ``lookup``: name -> family, raising KeyError (envs.core.UnknownFamilyError is one)
    for unknown names; default ``envs.get_family``. Checks: types, T >= 1, the T+1 / T
    step counts, dims against the family, and no NaN/Inf in obs, actions, rewards,
    reward_inputs or task.
    """
    eid = getattr(traj, "episode_id", "?")
    where = f"trajectory {eid}"

    def bad(msg: str) -> InvalidTrajectoryError:
        return InvalidTrajectoryError(f"{where}: {msg}")

    if not isinstance(eid, str) or not eid:
        raise bad(f"field 'episode_id' must be a non-empty str, got {eid!r}")
    if not isinstance(traj.family, str) or not traj.family:
        raise bad(f"field 'family' must be a non-empty str, got {traj.family!r}")
    for name in ("worker_id", "policy_version"):
        if not isinstance(getattr(traj, name), (int, np.integer)) or isinstance(getattr(traj, name), bool):
            raise bad(f"field {name!r} must be an int, got {getattr(traj, name)!r}")
    if not isinstance(traj.truncated, (bool, np.bool_)):
        raise bad(f"field 'truncated' must be a bool, got {traj.truncated!r}")
    if not isinstance(traj.created_at, (int, float, np.floating, np.integer)) or not math.isfinite(
        traj.created_at
    ):
        raise bad(f"field 'created_at' must be a finite number, got {traj.created_at!r}")

    fam = _resolve_family(traj, family, lookup, bad)
    arrays = _validate_shapes(traj, fam, bad)
    for name in _FINITE_FIELDS:
        _check_finite(name, arrays[name], bad)


def _resolve_family(traj: Trajectory, family: Any, lookup: Any, bad: Callable) -> Any:
    if family is None or isinstance(family, str):
        name = family or traj.family
        lookup = lookup or default_family_lookup()
        if lookup is None:
            return None
        try:
            family = lookup(name)
        except KeyError as exc:
            raise bad(f"field 'family': unknown family {name!r} ({exc})") from None
    fam_name = getattr(family, "name", traj.family)
    if fam_name != traj.family:
        raise bad(f"field 'family' is {traj.family!r} but it was validated against {fam_name!r}")
    return family


def _validate_shapes(traj: Trajectory, fam: Any, bad: Callable) -> dict[str, np.ndarray]:
    arrays = {}
    for name, ndim in _NDIM.items():
        value = getattr(traj, name)
        if not isinstance(value, np.ndarray):
            raise bad(f"field {name!r} must be a numpy array, got {type(value).__name__}")
        if name == "terminated":
            if value.dtype != np.bool_:
                raise bad(f"field 'terminated' must have dtype bool, got {value.dtype}")
        elif value.dtype.kind not in "iuf":
            raise bad(f"field {name!r} must hold real numbers, got dtype {value.dtype}")
        if value.ndim != ndim:
            raise bad(f"field {name!r} must have {ndim} dimension(s), got shape {value.shape}")
        arrays[name] = value
    T = arrays["actions"].shape[0]
    if T == 0:
        raise bad("field 'actions' has 0 steps: an empty trajectory (T=0) holds no transition")
    if arrays["obs"].shape[0] != T + 1:
        raise bad(f"field 'obs' must have T+1={T + 1} rows (T={T} from 'actions'), got shape {arrays['obs'].shape}")
    for name in ("rewards", "terminated", "reward_inputs"):
        if arrays[name].shape[0] != T:
            raise bad(f"field {name!r} must have T={T} rows (from 'actions'), got shape {arrays[name].shape}")
    if fam is not None:
        for name, attr in _DIM_ATTR.items():
            want, got = int(getattr(fam, attr)), arrays[name].shape[-1]
            if got != want:
                raise bad(
                    f"field {name!r} has last dimension {got}, family {traj.family!r} has {attr}={want}"
                )
    return arrays


def _check_finite(name: str, arr: np.ndarray, bad: Callable) -> None:
    if arr.dtype.kind != "f":
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    idx = tuple(int(i) for i in np.argwhere(~finite)[0])
    value = arr[idx]
    what = "NaN" if np.isnan(value) else ("Inf" if value > 0 else "-Inf")
    if name == "task":
        at = f"index {idx[0]}"
    else:
        at = f"step {idx[0]}" + (f", column {idx[1]}" if len(idx) > 1 else "")
    raise bad(f"field {name!r} contains {what} at {at}")

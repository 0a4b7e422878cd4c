"""Offline inspection of a store directory: ``hindsight store verify|stats DIR``.

    report = verify("/data/run1/store")      # read-only; every record of every shard
    print(format_verify(report)); sys.exit(0 if report.ok else 1)
    print(format_stats(stats("/data/run1/store")))

``DIR`` is a store root (``store.json`` and ``shard-NNN/`` folders) or one shard folder
(``seg-*.log`` files). Nothing here writes: a damaged segment is reported, and only a
Shard starting on it truncates it (see ``store``'s recovery).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from relabel_service.store import codec
from relabel_service.core import Trajectory
from relabel_service.store.segments import (
    SEGMENT_RE,
    STORE_META,
    Problem,
    list_segments,
    scan_shard,
    shard_dir,
)


class StoreNotFoundError(FileNotFoundError):
    """The path is not a store directory (the CLI exits 2 on it: a usage error)."""


def _shard_dirs(path: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """(shard folders, names of shards that store.json promises but are missing)."""
    root = Path(path)
    if not root.is_dir():
        raise StoreNotFoundError(f"{root}: no such store directory")
    if (root / STORE_META).exists():
        try:
            n = int(json.loads((root / STORE_META).read_text())["num_shards"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreNotFoundError(f"{root / STORE_META}: unreadable ({exc!r})") from None
        dirs = [shard_dir(root, i) for i in range(n)]
        return [d for d in dirs if d.is_dir()], [d.name for d in dirs if not d.is_dir()]
    if any(SEGMENT_RE.match(p.name) for p in root.iterdir()):
        return [root], []
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and list_segments(d))
    if not dirs:
        raise StoreNotFoundError(f"{root}: neither a store root (store.json) nor a shard (seg-*.log)")
    return dirs, []


DROPPED_RE = re.compile(r"^seg-(\d{8,})\.log\.dropped-(\d+)(?:\.\d+)?$")


def dropped_files(directory: str | os.PathLike) -> list[Problem]:
    """The ``.dropped-*`` files of a shard folder (bytes an earlier recovery moved aside),
    as problems of kind ``dropped_file``: the damage stays visible until an operator
    has looked at them and removed them."""
    out = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        m = DROPPED_RE.match(entry.name)
        if m and entry.is_file():
            size = entry.stat().st_size
            out.append(Problem(
                int(m.group(1)), int(m.group(2)), "dropped_file",
                "bytes an earlier recovery moved aside (inspect, then delete to clear)",
                size, moved_to=entry.name,
            ))
    return out


# ---- verify -----------------------------------------------------------------------------


@dataclasses.dataclass
class ShardCheck:
    directory: str
    segments: int = 0
    records: int = 0  # records that pass every check
    bytes: int = 0
    first_seq: int | None = None
    next_seq: int = 0
    dropped_files: int = 0  # .dropped-* files left by earlier recoveries (each also a problem)
    dropped_bytes: int = 0
    skipped: int = 0  # tombstones: records an earlier recovery skipped (their seqs stay used)
    problems: list[Problem] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class VerifyReport:
    """Result of ``verify``: ``ok`` is False when any record is torn, corrupt or invalid,
    or an earlier recovery left ``.dropped-*`` files (data was lost)."""

    root: str
    shards: list[ShardCheck]
    missing_shards: list[str]
    family_checks: bool  # False when no family registry was available (dims unchecked)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def problems(self) -> list[tuple[str, Problem]]:
        return [(s.directory, p) for s in self.shards for p in s.problems]

    @property
    def ok(self) -> bool:
        return not self.missing_shards and not any(s.problems for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(ok=self.ok, records=self.records)
        return d


def verify(path: str | os.PathLike, family_lookup: Callable[[str], Any] | None = None) -> VerifyReport:
    """Check every record of every shard: frame CRC, segment headers, seq order, decoding,
    and ``codec.validate`` (families from ``family_lookup``, default envs.get_family)."""
    dirs, missing = _shard_dirs(path)
    lookup = family_lookup or codec.default_family_lookup()
    families: dict[str, Any] = {}

    def family(name: str) -> Any:
        if name not in families:
            families[name] = lookup(name) if lookup is not None else None
        return families[name]

    shards = []
    for d in dirs:
        check = ShardCheck(str(d))
        dropped = dropped_files(d)
        check.dropped_files = len(dropped)
        check.dropped_bytes = sum(p.dropped_bytes for p in dropped)
        check.problems += dropped
        for scan in scan_shard(d):
            check.segments += 1
            check.bytes += len(scan.data)
            if scan.first_seq is not None and scan.first_seq < check.next_seq:
                check.problems.append(
                    Problem(scan.index, 0, "seq_overlap", f"first_seq {scan.first_seq} < {check.next_seq}", len(scan.data))
                )
                continue
            if scan.first_seq is None:
                check.problems.append(scan.problem)
                continue
            if check.first_seq is None and scan.frames:
                check.first_seq = scan.first_seq
            check.skipped += scan.tombstones
            check.problems += scan.holes
            for seq, off, payload in scan.records():
                problem = _check_record(scan.index, seq, off, payload, family)
                if problem is None:
                    check.records += 1
                else:
                    check.problems.append(problem)
            check.next_seq = scan.end_seq
            if scan.problem is not None:
                check.problems.append(scan.problem)
        shards.append(check)
    return VerifyReport(str(path), shards, missing, lookup is not None)


def verify_ok(report: VerifyReport) -> bool:
    """True when nothing is torn, corrupt, invalid or missing (the CLI's exit status)."""
    return report.ok


def load_all(path: str | os.PathLike) -> list[Trajectory]:
    """Every decodable trajectory of a store (or shard) directory: shard by shard, in seq
    order. Arrays are read-only views of the segment files' bytes (kept in memory)."""
    dirs, _ = _shard_dirs(path)
    out = []
    for d in dirs:
        for scan in scan_shard(d):
            if scan.first_seq is None:
                continue
            for _, _, payload in scan.records():
                try:
                    out.append(codec.decode(payload))
                except codec.CodecError:
                    continue
    return out


def _check_record(segment: int, seq: int, off: int, payload: memoryview, family: Callable) -> Problem | None:
    try:
        traj = codec.decode(payload)
    except codec.CodecError as exc:
        return Problem(segment, off, "undecodable", str(exc), seq=seq)
    try:
        codec.validate(traj, family(traj.family))
    except KeyError as exc:
        return Problem(segment, off, "invalid", f"trajectory {traj.episode_id}: field 'family': unknown family ({exc})", seq=seq)
    except codec.InvalidTrajectoryError as exc:
        return Problem(segment, off, "invalid", str(exc), seq=seq)
    return None


def format_verify(report: VerifyReport) -> str:
    mb = sum(s.bytes for s in report.shards) / 1e6
    lines = [
        f"store {report.root}: {len(report.shards)} shard(s), {report.records:,} good records, "
        f"{mb:.1f} MB: {'OK' if report.ok else 'CORRUPT'}"
    ]
    if not report.family_checks:
        lines.append("  (no family registry: dimensions were not checked against families)")
    for s in report.shards:
        span = f"seq {s.first_seq}..{s.next_seq - 1}" if s.first_seq is not None else "empty"
        extra = f", {s.skipped} record(s) skipped by an earlier recovery" if s.skipped else ""
        if s.dropped_files:
            extra += f", {s.dropped_files} .dropped file(s) ({s.dropped_bytes:,} bytes) from earlier recoveries"
        lines.append(
            f"  {Path(s.directory).name}: {s.records:,} records in {s.segments} segment(s) ({span}), "
            f"{s.bytes / 1e6:.1f} MB{extra}"
        )
    for name in report.missing_shards:
        lines.append(f"  {name}: MISSING")
    problems = report.problems
    if problems:
        lines.append(f"problems ({len(problems)}):")
        lines += [f"  {Path(d).name}/{p.describe()}" for d, p in problems]
    return "\n".join(lines)


# ---- stats ------------------------------------------------------------------------------


def stats(path: str | os.PathLike, decimals: int = 2, top: int = 10) -> dict[str, Any]:
    """Counts per shard and per family. Tasks are bucketed by rounding to ``decimals``
    (discrete task sets show each task; continuous ones show the densest buckets), with
    the number of distinct tasks, the per-dimension task range, episode lengths, policy
    versions, workers and time span. JSON-able."""
    dirs, missing = _shard_dirs(path)
    shard_rows = []
    fam: dict[str, dict[str, Any]] = {}
    for d in dirs:
        dropped = dropped_files(d)
        row = {"shard": d.name, "records": 0, "bytes": 0, "segments": 0, "first_seq": None, "next_seq": 0,
               "unreadable": 0, "skipped": 0, "damaged": [], "dropped_files": [p.moved_to for p in dropped],
               "dropped_bytes": sum(p.dropped_bytes for p in dropped)}
        for scan in scan_shard(d):
            row["segments"] += 1
            row["bytes"] += len(scan.data)
            row["damaged"] += [p.describe() for p in scan.problems]
            if scan.first_seq is None:
                continue
            if row["first_seq"] is None and scan.frames:
                row["first_seq"] = scan.first_seq
            row["next_seq"] = scan.end_seq
            row["skipped"] += scan.tombstones
            for _, _, payload in scan.records():
                try:
                    t = codec.decode(payload)
                except codec.CodecError:
                    row["unreadable"] += 1
                    continue
                row["records"] += 1
                f = fam.setdefault(t.family, {"records": 0, "steps": 0, "truncated": 0, "tasks": collections.Counter(),
                                              "exact": set(), "lo": None, "hi": None, "pv": [None, None],
                                              "workers": set(), "time": [None, None]})
                f["records"] += 1
                f["steps"] += t.length
                f["truncated"] += bool(t.truncated)
                task = np.asarray(t.task, dtype=np.float64)
                f["exact"].add(task.tobytes())
                f["tasks"][tuple(np.round(task, decimals).tolist())] += 1
                f["lo"] = task if f["lo"] is None else np.minimum(f["lo"], task)
                f["hi"] = task if f["hi"] is None else np.maximum(f["hi"], task)
                f["pv"] = [_min(f["pv"][0], t.policy_version), _max(f["pv"][1], t.policy_version)]
                f["time"] = [_min(f["time"][0], t.created_at), _max(f["time"][1], t.created_at)]
                f["workers"].add(t.worker_id)
        shard_rows.append(row)
    families = {}
    for name, f in sorted(fam.items()):
        families[name] = {
            "records": f["records"],
            "steps": f["steps"],
            "mean_length": f["steps"] / f["records"],
            "truncated": f["truncated"],
            "distinct_tasks": len(f["exact"]),
            "task_buckets": len(f["tasks"]),
            "task_min": f["lo"].tolist(),
            "task_max": f["hi"].tolist(),
            "top_tasks": [{"task": list(k), "records": n} for k, n in f["tasks"].most_common(top)],
            "policy_versions": f["pv"],
            "workers": len(f["workers"]),
            "created_at": f["time"],
        }
    return {
        "root": str(path),
        "ok": not missing and not any(r["damaged"] or r["dropped_files"] or r["unreadable"] for r in shard_rows),
        "records": sum(r["records"] for r in shard_rows),
        "bytes": sum(r["bytes"] for r in shard_rows),
        "shards": shard_rows,
        "missing_shards": missing,
        "families": families,
        "task_decimals": decimals,
    }


def _min(a: Any, b: Any) -> Any:
    return b if a is None else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if a is None else max(a, b)


def format_stats(st: dict[str, Any]) -> str:
    lines = [f"store {st['root']}: {st['records']:,} records, {st['bytes'] / 1e6:.1f} MB in {len(st['shards'])} shard(s)"]
    damage = []
    for r in st["shards"]:
        span = f"seq {r['first_seq']}..{r['next_seq'] - 1}" if r["first_seq"] is not None else "empty"
        bad = f", {r['unreadable']} unreadable" if r["unreadable"] else ""
        bad += f", {r['skipped']} skipped by recovery" if r["skipped"] else ""
        lines.append(f"  {r['shard']}: {r['records']:,} records, {r['segments']} segment(s), {span}, {r['bytes'] / 1e6:.1f} MB{bad}")
        if r["dropped_files"]:
            damage.append(
                f"  {r['shard']}: {len(r['dropped_files'])} .dropped file(s), {r['dropped_bytes']:,} bytes lost to recovery: "
                + ", ".join(r["dropped_files"])
            )
        damage += [f"  {r['shard']}/{d} (not yet recovered)" for d in r["damaged"]]
    for name in st["missing_shards"]:
        lines.append(f"  {name}: MISSING")
        damage.append(f"  {name}: MISSING")
    if damage:
        lines.append(f"DAMAGE ({len(damage)}): run `hindsight store verify` for details")
        lines += damage
    for name, f in st["families"].items():
        lines.append(
            f"family {name}: {f['records']:,} trajectories, {f['steps']:,} steps (mean length {f['mean_length']:.1f}, "
            f"{f['truncated']:,} truncated), policy versions {f['policy_versions'][0]}..{f['policy_versions'][1]}, "
            f"{f['workers']} worker(s)"
        )
        lines.append(
            f"  {f['distinct_tasks']:,} distinct tasks, {f['task_buckets']:,} buckets at {st['task_decimals']} decimals; "
            f"task range {_fmt_vec(f['task_min'])} .. {_fmt_vec(f['task_max'])}"
        )
        for b in f["top_tasks"]:
            lines.append(f"    {_fmt_vec(b['task']):>30}  {b['records']:,}")
    return "\n".join(lines)


def _fmt_vec(v: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"

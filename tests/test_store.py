"""Shard and SegmentLog on real files: append/read, rolls, capacity, crash recovery, tools."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_store import assert_traj_equal, family_lookup, make_traj
from relabel_service.store import codec, tools
from relabel_service.store import Shard, list_segments, shard_dir, shard_for

SMALL = 2048  # segment_bytes for tests: ~5 small trajectories per segment


def shard(path, **kw) -> Shard:
    kw.setdefault("fsync", "never")
    kw.setdefault("segment_bytes", SMALL)
    return Shard(path, **kw)


def fill(sh: Shard, n: int, start: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    trajs = [make_traj(rng, i) for i in range(start, start + n)]
    return trajs, [sh.append(t) for t in trajs]


def read_all(sh: Shard, cursor: int = 0, page: int = 7) -> list:
    out = []
    while True:
        recs, nxt = sh.read(cursor, page)
        if not recs:
            return out
        out += [codec.decode(r) for r in recs]
        cursor = nxt


def seqs_of(sh: Shard) -> list[int]:
    return sh.read_seqs(0, 10**9)


# ---- append / read ----------------------------------------------------------------------


def test_append_then_read_in_pages(tmp_path) -> None:
    with shard(tmp_path) as sh:
        trajs, acks = fill(sh, 40)
        assert [a.seq for a in acks] == list(range(40))
        assert all(a.shard == 0 and not a.duplicate for a in acks)
        for t, got in zip(trajs, read_all(sh)):
            assert_traj_equal(got, t)
        recs, nxt = sh.read(35, 100)
        assert len(recs) == 5 and nxt == 40
        assert sh.read(40, 10) == ([], 40)
        assert sh.read(10**6, 10) == ([], 40)  # a cursor from the future is clamped to next seq


def test_acks_point_at_the_frames(tmp_path) -> None:
    with shard(tmp_path) as sh:
        trajs, acks = fill(sh, 12)
    for t, a in zip(trajs, acks):
        data = (tmp_path / f"seg-{a.segment:08d}.log").read_bytes()
        n, crc = codec.FRAME_HEADER.unpack_from(data, a.offset)
        payload = data[a.offset + 8 : a.offset + 8 + n]
        assert zlib.crc32(payload) == crc
        assert_traj_equal(codec.decode(payload), t)


def test_append_many_bytes_and_trajectories_alike(tmp_path) -> None:
    rng = np.random.default_rng(1)
    trajs = [make_traj(rng, i) for i in range(20)]
    with shard(tmp_path) as sh:
        acks = sh.append_many([codec.encode(t) if i % 2 else t for i, t in enumerate(trajs)])
        assert [a.seq for a in acks] == list(range(20))
        for t, got in zip(trajs, read_all(sh)):
            assert_traj_equal(got, t)


def test_read_max_bytes_returns_at_least_one(tmp_path) -> None:
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        fill(sh, 10)
        one, nxt = sh.read(0, 10, max_bytes=1)
        assert len(one) == 1 and nxt == 1
        some, _ = sh.read(0, 10, max_bytes=3 * len(one[0]) + 10)
        assert 1 <= len(some) <= 4


def test_rejects_garbage_and_writes_nothing(tmp_path) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 3)
        size = sum(p.stat().st_size for _, p in list_segments(tmp_path))
        with pytest.raises(codec.InvalidTrajectoryError, match="shard 0: record is not an encoded trajectory"):
            sh.append_many([codec.encode(make_traj(np.random.default_rng(0), 99)), b"junk"])
        assert sh.next_seq == 3 and len(sh) == 3
        assert sum(p.stat().st_size for _, p in list_segments(tmp_path)) == size


def test_same_episode_id_is_stored_once(tmp_path) -> None:
    rng = np.random.default_rng(2)
    t = make_traj(rng, 5)
    with shard(tmp_path) as sh:
        first = sh.append(t)
        again = sh.append(t)
        batch = sh.append_many([make_traj(rng, 6), make_traj(rng, 6)])
        assert again == first._replace(duplicate=True)
        assert batch[1] == batch[0]._replace(duplicate=True)
        assert len(sh) == 2 and sh.stats()["duplicates"] == 2
    with shard(tmp_path) as sh:  # also after a restart: the index knows the ids
        assert sh.append(t) == first._replace(duplicate=True)
        assert len(sh) == 2


# ---- segments and capacity --------------------------------------------------------------


def test_rolls_into_named_segments(tmp_path) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 30)
        segs = list_segments(tmp_path)
        assert [p.name for _, p in segs] == [f"seg-{i:08d}.log" for i in range(len(segs))]
        assert len(segs) > 3
        assert all(p.stat().st_size <= SMALL for _, p in segs)
        assert sh.stats()["segments"] == len(segs)


def test_oversized_record_gets_a_segment_of_its_own(tmp_path) -> None:
    big = make_traj(np.random.default_rng(3), 100, T=200)  # ~2.5 kB > SMALL
    with shard(tmp_path) as sh:
        fill(sh, 2)
        ack = sh.append(big)
        sh.append(make_traj(np.random.default_rng(4), 101))
        assert_traj_equal(codec.decode(sh.read(ack.seq, 1)[0][0]), big)
        assert len({a.segment for a in [ack, sh._ack_of(ack.seq + 1)]}) == 2


def test_capacity_drops_whole_oldest_segments_and_cursors_survive(tmp_path) -> None:
    with shard(tmp_path, max_segments=3) as sh:
        trajs, acks = fill(sh, 60)
        segs = list_segments(tmp_path)
        assert len(segs) == 3 and segs[0][0] > 0
        kept = seqs_of(sh)
        oldest = kept[0]
        assert oldest > 0 and kept == list(range(oldest, 60))
        # every record of a retained segment is kept: drops happen at segment boundaries
        assert oldest == min(a.seq for a in acks if a.segment == segs[0][0])
        recs, nxt = sh.read(0, 5)  # a cursor older than the oldest record starts there
        assert [codec.decode(r).episode_id for r in recs] == [t.episode_id for t in trajs[oldest : oldest + 5]]
        assert nxt == oldest + 5
        mid = oldest + 3
        assert codec.decode(sh.read(mid, 1)[0][0]).episode_id == trajs[mid].episode_id
        assert sh.stats()["dropped_segments"] == segs[0][0]
        assert sh.stats()["families"]["test_goal"]["records"] == len(kept)
    with shard(tmp_path, max_segments=3) as sh:  # seqs are the same after a restart
        assert seqs_of(sh) == kept
        assert codec.decode(sh.read(mid, 1)[0][0]).episode_id == trajs[mid].episode_id
        assert sh.append(make_traj(np.random.default_rng(9), 1000)).seq == 60


def test_capacity_in_bytes(tmp_path) -> None:
    with shard(tmp_path, max_bytes=3 * SMALL) as sh:
        fill(sh, 80)
        assert sum(p.stat().st_size for _, p in list_segments(tmp_path)) <= 3 * SMALL
        assert seqs_of(sh)[-1] == 79


def test_batch_spanning_rolls_with_tiny_capacity(tmp_path) -> None:
    rng = np.random.default_rng(5)
    with shard(tmp_path, max_segments=1) as sh:
        acks = sh.append_many([make_traj(rng, i) for i in range(25)])
        kept = seqs_of(sh)
        assert kept == list(range(kept[0], 25)) and len(list_segments(tmp_path)) == 1
        assert [a.seq for a in acks] == list(range(25))
        assert len(read_all(sh)) == len(kept)


def test_restart_continues_sequence_numbers(tmp_path) -> None:
    with shard(tmp_path) as sh:
        trajs, _ = fill(sh, 17)
    with shard(tmp_path) as sh:
        r = sh.recovery_report
        assert r.ok and r.records == 17 and r.next_seq == 17
        more, acks = fill(sh, 5, start=17, seed=1)
        assert [a.seq for a in acks] == list(range(17, 22))
        for t, got in zip(trajs + more, read_all(sh)):
            assert_traj_equal(got, t)


def test_recovers_many_records(tmp_path) -> None:
    rng = np.random.default_rng(6)
    with Shard(tmp_path, fsync="never", segment_bytes=256 << 10) as sh:
        sh.append_many([make_traj(rng, i, T=3) for i in range(5000)])
    with Shard(tmp_path, fsync="never") as sh:
        assert sh.recovery_report.records == 5000 and len(sh) == 5000 and sh.next_seq == 5000


# ---- crash recovery ------------------------------------------------------------------------


def _last_segment(path) -> Path:
    return list_segments(path)[-1][1]


@pytest.mark.parametrize("cut", [1, 3, 8, 9, 30, "all-but-one"])
def test_torn_tail_is_dropped_reported_and_the_rest_kept(tmp_path, cut) -> None:
    with shard(tmp_path) as sh:
        trajs, acks = fill(sh, 23)
    last = _last_segment(tmp_path)
    size = last.stat().st_size
    frame_len = size - acks[-1].offset
    cut = frame_len - 1 if cut == "all-but-one" else cut
    os.truncate(last, size - cut)  # the last record loses its end (e.g. a truncated copy)
    assert not tools.verify(tmp_path).ok
    with shard(tmp_path) as sh:
        r = sh.recovery_report
        assert [p.kind for p in r.problems] == ["torn_tail"]
        p = r.problems[0]
        assert (p.offset, p.seq, p.dropped_bytes, p.action) == (acks[-1].offset, 22, frame_len - cut, "cut")
        assert p.records == 1 and r.dropped_records == 1  # the clean close knew seq 22 was issued
        assert (tmp_path / p.moved_to).stat().st_size == frame_len - cut
        assert seqs_of(sh) == list(range(22))
        for t, got in zip(trajs[:22], read_all(sh)):
            assert_traj_equal(got, t)
        assert last.stat().st_size == acks[-1].offset  # truncated to the last good record
        # seq 22 was acknowledged (a reader may have passed it): it is never issued again
        assert sh.append(trajs[-1]).seq == 23
    report = tools.verify(tmp_path)
    assert not report.ok and [q.kind for _, q in report.problems] == ["dropped_file"]  # the loss stays visible
    os.unlink(tmp_path / p.moved_to)
    assert tools.verify(tmp_path).ok


def test_torn_tail_is_logged(tmp_path, caplog) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 4)
    last = _last_segment(tmp_path)
    os.truncate(last, last.stat().st_size - 2)
    with caplog.at_level("WARNING", logger="relabel_service.store"):
        shard(tmp_path).close()
    assert "torn_tail" in caplog.text and last.name in caplog.text


def _flip(path: Path, offset: int, xor: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= xor
    path.write_bytes(bytes(data))


def test_flipped_byte_in_an_older_segment_skips_that_record_only(tmp_path) -> None:
    with shard(tmp_path) as sh:
        trajs, acks = fill(sh, 40)
    seg1 = [a for a in acks if a.segment == 1]
    assert len(seg1) >= 3
    victim = seg1[1]
    path = tmp_path / "seg-00000001.log"
    size = path.stat().st_size
    _flip(path, victim.offset + 8 + 20)  # inside the payload
    damaged = path.read_bytes()[victim.offset : seg1[2].offset]
    report = tools.verify(tmp_path)
    assert not report.ok and [p.kind for _, p in report.problems] == ["crc_mismatch"]
    with shard(tmp_path) as sh:
        r = sh.recovery_report
        assert [(p.kind, p.segment, p.offset, p.seq, p.action, p.records) for p in r.problems] == [
            ("crc_mismatch", 1, victim.offset, victim.seq, "skipped", 1)
        ]
        assert r.dropped_records == 1 and r.dropped_bytes == seg1[2].offset - victim.offset
        # every intact record after it is kept, with its seq
        assert seqs_of(sh) == [s for s in range(40) if s != victim.seq]
        got = read_all(sh)
        assert len(got) == 39
        for g in got:
            assert_traj_equal(g, trajs[int(g.episode_id.split("-e")[1])])
        assert sh.append(make_traj(np.random.default_rng(1), 99)).seq == 40
        assert path.stat().st_size == size  # the frame was replaced in place by a tombstone
        assert (tmp_path / r.problems[0].moved_to).read_bytes() == damaged  # the bytes are kept aside
    with shard(tmp_path) as sh:  # the skip is durable: nothing new to report, seqs unchanged
        assert sh.recovery_report.ok and seqs_of(sh)[:40] == [s for s in range(41) if s != victim.seq][:40]
    report = tools.verify(tmp_path)
    assert [p.kind for _, p in report.problems] == ["dropped_file"]
    assert report.shards[0].skipped == 1 and "1 record(s) skipped" in tools.format_verify(report)


def test_flipped_crc_field_in_the_last_segment_keeps_later_records(tmp_path) -> None:
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        trajs, acks = fill(sh, 10)
    _flip(_last_segment(tmp_path), acks[6].offset + 5)  # in the crc field
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        assert [(p.kind, p.seq, p.action) for p in sh.recovery_report.problems] == [("crc_mismatch", 6, "skipped")]
        assert seqs_of(sh) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
        assert sh.append(make_traj(np.random.default_rng(5), 50)).seq == 10


def test_corrupt_final_record_ending_at_eof_is_skipped_alone(tmp_path) -> None:
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        trajs, acks = fill(sh, 5)
    _flip(_last_segment(tmp_path), acks[4].offset + 30)
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        assert [(p.kind, p.seq, p.action) for p in sh.recovery_report.problems] == [("crc_mismatch", 4, "skipped")]
        assert seqs_of(sh) == [0, 1, 2, 3] and sh.next_seq == 5


def test_damaged_records_in_a_row_in_the_last_segment_are_skipped_each_alone(tmp_path) -> None:
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        trajs, acks = fill(sh, 10)
    last = _last_segment(tmp_path)
    _flip(last, acks[4].offset + 30)  # two neighbours: neither is followed by a valid frame
    _flip(last, acks[5].offset + 30)
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        r = sh.recovery_report
        assert [(p.kind, p.seq, p.action, p.records) for p in r.problems] == [
            ("crc_mismatch", 4, "skipped", 1), ("crc_mismatch", 5, "skipped", 1)
        ]
        assert seqs_of(sh) == [0, 1, 2, 3, 6, 7, 8, 9]


def test_random_bytes_over_the_tail_are_cut(tmp_path) -> None:
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        trajs, acks = fill(sh, 10)
    last = _last_segment(tmp_path)
    data = bytearray(last.read_bytes())
    data[acks[7].offset :] = np.random.default_rng(0).integers(0, 256, len(data) - acks[7].offset, np.uint8).tobytes()
    last.write_bytes(bytes(data))
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        assert [(p.seq, p.action) for p in sh.recovery_report.problems] == [(7, "cut")]
        assert seqs_of(sh) == list(range(7)) and sh.next_seq == 10


def test_damaged_length_field_is_repaired_and_nothing_is_lost(tmp_path) -> None:
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        trajs, acks = fill(sh, 10)
    last = _last_segment(tmp_path)
    _flip(last, acks[3].offset + 1, 0x40)  # length field: the frame seems 16 KB longer
    assert [p.kind for _, p in tools.verify(tmp_path).problems] == ["bad_length"]
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        r = sh.recovery_report
        assert [(p.kind, p.seq, p.action, p.records) for p in r.problems] == [("bad_length", 3, "repaired", 0)]
        assert r.records == 10 and seqs_of(sh) == list(range(10))
        for t, got in zip(trajs, read_all(sh)):
            assert_traj_equal(got, t)
    assert [p.kind for _, p in tools.verify(tmp_path).problems] == ["dropped_file"]  # the old header, kept aside


def _damage_length_and_payload(path: Path, offset: int) -> None:
    _flip(path, offset + 2, 0x01)  # length field off by 64 KB
    _flip(path, offset + 8 + 12)  # and the payload: no single CRC-checked frame spans the gap


def test_damaged_length_in_an_older_segment_is_placed_by_the_next_segments_first_seq(tmp_path) -> None:
    with shard(tmp_path) as sh:
        trajs, acks = fill(sh, 40)
    seg1 = [a for a in acks if a.segment == 1]
    victim = seg1[1]
    _damage_length_and_payload(tmp_path / "seg-00000001.log", victim.offset)
    with shard(tmp_path) as sh:
        r = sh.recovery_report
        assert [(p.kind, p.seq, p.action, p.records) for p in r.problems] == [("bad_length", victim.seq, "skipped", 1)]
        assert seqs_of(sh) == [s for s in range(40) if s != victim.seq]


def test_damaged_length_in_the_last_segment_cuts_the_rest_of_it(tmp_path) -> None:
    # documented limit: nothing tells how many records the damaged bytes held, so the
    # records after them cannot keep their seqs; they go to a .dropped file
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        trajs, acks = fill(sh, 10)
    _damage_length_and_payload(_last_segment(tmp_path), acks[6].offset)
    with shard(tmp_path, segment_bytes=1 << 20) as sh:
        r = sh.recovery_report
        assert [(p.kind, p.seq, p.action, p.records) for p in r.problems] == [("bad_length", 6, "cut", 4)]
        assert seqs_of(sh) == list(range(6)) and sh.next_seq == 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_flipped_byte_loses_at_most_its_own_record(data: st.DataObject) -> None:
    """Property: one flipped byte anywhere after the header of a segment, old or last,
    costs at most the record it hit; every other record keeps its seq."""
    with tempfile.TemporaryDirectory() as d:
        with shard(d) as sh:
            trajs, acks = fill(sh, 12, seed=3)
        segs = sorted({a.segment for a in acks})
        seg = data.draw(st.sampled_from(segs), label="segment")
        mine = [a for a in acks if a.segment == seg]
        path = Path(d) / f"seg-{seg:08d}.log"
        k = data.draw(st.integers(0, len(mine) - 1), label="record")
        end = mine[k + 1].offset if k + 1 < len(mine) else path.stat().st_size
        pos = data.draw(st.integers(mine[k].offset, end - 1), label="byte")
        _flip(path, pos, data.draw(st.integers(1, 255), label="xor"))
        with shard(d) as sh:
            kept = seqs_of(sh)
            assert set(range(12)) - set(kept) <= {mine[k].seq}
            for got in read_all(sh):
                assert_traj_equal(got, trajs[int(got.episode_id.split("-e")[1])])
            assert sh.append(make_traj(np.random.default_rng(9), 77)).seq == 12


def test_zero_filled_tail_is_dropped(tmp_path) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 4)
    with open(_last_segment(tmp_path), "ab") as f:
        f.write(bytes(4096))
    with shard(tmp_path) as sh:
        assert [p.kind for p in sh.recovery_report.problems] == ["bad_length"]
        assert len(sh) == 4 and sh.next_seq == 4


def test_corrupt_segment_header_drops_that_segment_only(tmp_path) -> None:
    with shard(tmp_path) as sh:
        trajs, acks = fill(sh, 30)
    _flip(tmp_path / "seg-00000002.log", 12)
    with shard(tmp_path) as sh:
        assert [(p.kind, p.segment) for p in sh.recovery_report.problems] == [("bad_header", 2)]
        lost = {a.seq for a in acks if a.segment == 2}
        assert seqs_of(sh) == [s for s in range(30) if s not in lost]
        assert sh.next_seq == 30


def test_empty_segment_from_a_crash_during_roll_is_recreated(tmp_path) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 12)
        nxt = list_segments(tmp_path)[-1][0] + 1
    (tmp_path / f"seg-{nxt:08d}.log").write_bytes(b"\x10\x00")  # a torn header
    with shard(tmp_path) as sh:
        assert sh.recovery_report.ok
        assert sh.append(make_traj(np.random.default_rng(0), 50)).seq == 12
    with shard(tmp_path) as sh:
        assert sh.recovery_report.ok and len(sh) == 13


# ---- queries --------------------------------------------------------------------------------


def test_recent_sample_and_by_task(tmp_path) -> None:
    rng = np.random.default_rng(7)
    corners = np.array([[1.0, 1.0], [-1.0, 1.0], [0.0, -1.0]])
    trajs = [make_traj(rng, i, task=corners[i % 3] + (1e-3 if i == 7 else 0.0)) for i in range(30)]
    with shard(tmp_path) as sh:
        sh.append_many(trajs)
        assert [codec.decode(r).episode_id for r in sh.recent(4)] == [t.episode_id for t in trajs[-4:]]
        assert len(sh.recent(100)) == 30
        a, b = sh.sample(10, rng_seed=3), sh.sample(10, rng_seed=3)
        assert a == b and len({codec.decode(r).episode_id for r in a}) == 10
        assert len(sh.sample(100, rng_seed=0)) == 30
        exact = [codec.decode(r).episode_id for r in sh.by_task("test_goal", corners[1])]
        assert exact == [t.episode_id for i, t in enumerate(trajs) if i % 3 == 1 and i != 7]
        near = sh.by_task("test_goal", corners[1], atol=0.01)
        assert len(near) == 10
        assert len(sh.by_task("test_goal", corners[0], n=2)) == 2
        assert sh.by_task("other", corners[0]) == []
        counts = {tuple(t): n for _, t, n in sh.task_counts()}
        assert counts[(1.0, 1.0)] == 10 and counts[(0.0, -1.0)] == 10


# ---- fsync ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_fsync_interval_at_most_once_per_interval_and_on_close(tmp_path) -> None:
    clock = FakeClock()
    sh = Shard(tmp_path, fsync="interval", fsync_interval_s=1.0, background_sync=False, clock=clock, segment_bytes=1 << 20)
    fill(sh, 5)
    assert sh.stats()["fsyncs"] == 0
    clock.t = 1.5
    fill(sh, 5, start=5)
    assert sh.stats()["fsyncs"] == 1
    clock.t = 2.0
    fill(sh, 5, start=10)
    assert sh.stats()["fsyncs"] == 1
    sh.close()
    assert sh._log.fsyncs == 2  # the dirty tail is synced on close


def test_fsync_always_and_never(tmp_path) -> None:
    with Shard(tmp_path / "a", fsync="always", segment_bytes=1 << 20) as sh:
        fill(sh, 5)
        sh.append_many([make_traj(np.random.default_rng(1), i) for i in range(10, 20)])
        assert sh.stats()["fsyncs"] == 6  # one per append, one per batch
    with Shard(tmp_path / "n", fsync="never") as sh:
        fill(sh, 5)
        assert sh.stats()["fsyncs"] == 0
    with pytest.raises(ValueError, match="fsync must be one of"):
        Shard(tmp_path / "x", fsync="sometimes")


def test_fsync_interval_background_thread_syncs_an_idle_log(tmp_path) -> None:
    with Shard(tmp_path, fsync="interval", fsync_interval_s=0.01) as sh:
        fill(sh, 1)
        deadline = time.monotonic() + 20
        while sh.stats()["fsyncs"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sh.stats()["fsyncs"] >= 1


# ---- routing ----------------------------------------------------------------------------------


def test_shard_for_is_stable_and_spreads() -> None:
    assert shard_for("w0-e17", 4) == zlib.crc32(b"w0-e17") % 4 == 1
    assert shard_for("épisode-ü", 7) == zlib.crc32("épisode-ü".encode()) % 7
    counts = np.bincount([shard_for(f"w{i % 8}-e{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 800
    with pytest.raises(ValueError):
        shard_for("x", 0)


# ---- tools --------------------------------------------------------------------------------------


def _store_root(tmp_path, n_shards: int = 2, n: int = 30) -> tuple[Path, list]:
    root = tmp_path / "store"
    root.mkdir()
    (root / "store.json").write_text(json.dumps({"num_shards": n_shards, "format": 1}))
    rng = np.random.default_rng(11)
    corners = np.array([[1.0, 1.0], [-1.0, 1.0]])
    trajs = [make_traj(rng, i, task=corners[i % 2]) for i in range(n)]
    shards = [shard(shard_dir(root, s), shard_id=s) for s in range(n_shards)]
    for t in trajs:
        shards[shard_for(t.episode_id, n_shards)].append(t)
    for s in shards:
        s.close()
    return root, trajs


def test_tools_verify_and_stats_on_a_store_root(tmp_path) -> None:
    root, trajs = _store_root(tmp_path)
    report = tools.verify(root, family_lookup=family_lookup)
    assert report.ok and report.records == 30 and len(report.shards) == 2
    assert "OK" in tools.format_verify(report)
    json.dumps(report.to_dict())
    st = tools.stats(root)
    assert st["records"] == 30 and sum(r["records"] for r in st["shards"]) == 30
    fam = st["families"]["test_goal"]
    assert fam["records"] == 30 and fam["steps"] == sum(t.length for t in trajs)
    assert fam["distinct_tasks"] == 2 and {tuple(b["task"]): b["records"] for b in fam["top_tasks"]} == {(1.0, 1.0): 15, (-1.0, 1.0): 15}
    text = tools.format_stats(st)
    assert "test_goal" in text and "30 records" in text
    json.dumps(st)
    # a single shard folder works too
    assert tools.verify(shard_dir(root, 0)).records + tools.verify(shard_dir(root, 1)).records == 30
    assert tools.verify_ok(report)
    loaded = {t.episode_id: t for t in tools.load_all(root)}
    assert len(loaded) == 30
    for t in trajs:
        assert_traj_equal(loaded[t.episode_id], t)


def test_tools_verify_names_corruption_and_invalid_records(tmp_path) -> None:
    root, _ = _store_root(tmp_path)
    bad = make_traj(np.random.default_rng(0), 500, T=6)
    rewards = bad.rewards.copy()
    rewards[4] = np.nan
    with shard(shard_dir(root, 1), shard_id=1) as sh:  # a Shard alone does not validate
        sh.append(dataclasses.replace(bad, rewards=rewards))
    seg = list_segments(shard_dir(root, 0))[0][1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 1
    seg.write_bytes(bytes(data))
    report = tools.verify(root, family_lookup=family_lookup)
    assert not report.ok
    kinds = sorted(p.kind for _, p in report.problems)
    assert kinds == ["crc_mismatch", "invalid"]
    text = tools.format_verify(report)
    assert "CORRUPT" in text and "field 'rewards' contains NaN at step 4" in text and "crc_mismatch" in text
    assert (shard_dir(root, 0) / seg.name).read_bytes() == bytes(data)  # verify never writes


def test_tools_missing_directory_and_missing_shard(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        tools.verify(tmp_path / "nope")
    root, _ = _store_root(tmp_path)
    (root / "store.json").write_text(json.dumps({"num_shards": 3, "format": 1}))
    report = tools.verify(root)
    assert not report.ok and report.missing_shards == ["shard-002"]


def test_one_writer_per_shard_directory(tmp_path) -> None:
    from relabel_service.store import ShardLockedError

    with shard(tmp_path) as sh:
        fill(sh, 2)
        with pytest.raises(ShardLockedError, match="one writer"):
            Shard(tmp_path, fsync="never", lock_timeout_s=0.0)
        assert tools.verify(tmp_path).ok  # readers need no lock
    with shard(tmp_path) as sh:  # released on close
        assert len(sh) == 2


# ---- seqs never rewind (a reader's cursor never passes unread records) --------------------


def _crash_after_appending(directory: Path, n: int) -> int:
    """Append n records in another process that reads them all back and dies without
    closing (a killed actor); the reader's cursor after reading."""
    code = (
        "import os, sys, numpy as np\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from helpers_store import make_traj\n"
        "from relabel_service.store import Shard\n"
        f"sh = Shard({str(directory)!r}, fsync='never', segment_bytes={SMALL})\n"
        "rng = np.random.default_rng(0)\n"
        f"sh.append_many([make_traj(rng, i) for i in range({n})])\n"
        "print(sh.read(0, 10**6)[1], flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def test_a_reader_past_a_lost_tail_still_sees_new_records_after_a_crash(tmp_path) -> None:
    cursor = _crash_after_appending(tmp_path, 20)  # a relabel worker had read everything
    assert cursor == 20
    last = _last_segment(tmp_path)
    os.truncate(last, last.stat().st_size - 50)  # and the tail is damaged (a record cut mid-way)
    with shard(tmp_path) as sh:
        r = sh.recovery_report
        assert r.clean is False and [p.kind for p in r.problems] == ["torn_tail"]
        assert "0 record(s) known lost" in r.summary() and "never acknowledged" in r.summary()
        assert r.recovered_next_seq == 19  # the segments alone would rewind below the cursor
        assert r.next_seq >= cursor  # seqs issued before the crash are never issued again
        new = sh.append(make_traj(np.random.default_rng(1), 100))
        assert new.seq >= cursor
        recs, _ = sh.read(cursor, 100)
        assert [codec.decode(p).episode_id for p in recs] == ["w1-e100"]  # the reader gets it


def test_the_client_floor_holds_when_the_seq_file_is_lost(tmp_path) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 20)
        _, cursor = sh.read(0, 100)
    last = _last_segment(tmp_path)
    os.truncate(last, last.stat().st_size - 50)
    os.unlink(tmp_path / "seqs.json")  # e.g. a store written before it existed
    with shard(tmp_path, min_next_seq=cursor) as sh:
        assert sh.recovery_report.seq_floor == 20 and sh.next_seq == 20
        assert sh.append(make_traj(np.random.default_rng(1), 100)).seq == 20
        assert len(sh.read(cursor, 100)[0]) == 1
    with pytest.raises(ValueError, match="min_next_seq"):
        shard(tmp_path / "x", min_next_seq=-1)


def test_a_lost_last_segment_does_not_rewind_seqs(tmp_path) -> None:
    with shard(tmp_path) as sh:
        fill(sh, 30)
    last = _last_segment(tmp_path)
    _flip(last, 12)  # its header: the whole segment is unusable
    with shard(tmp_path) as sh:
        r = sh.recovery_report
        assert [(p.kind, p.action) for p in r.problems] == [("bad_header", "moved")]
        assert r.recovered_next_seq < 30 and sh.next_seq == 30 and r.dropped_records == 30 - r.recovered_next_seq


def test_restarts_without_damage_do_not_pile_up_segments(tmp_path) -> None:
    for _ in range(3):
        _crash_after_appending(tmp_path, 0)
    assert len(list_segments(tmp_path)) == 1


# ---- hindsight store verify|stats --------------------------------------------------------


@pytest.mark.parametrize("cmd", ["verify", "stats"])
@pytest.mark.parametrize("what", ["missing", "a file", "an empty dir", "bad store.json"])
def test_cli_store_on_a_missing_or_wrong_path_is_one_line_exit_2(tmp_path, capsys, cmd, what) -> None:
    from hindsight.cli import main

    path = tmp_path / "store"
    if what == "a file":
        path.write_text("x")
    elif what == "an empty dir":
        path.mkdir()
    elif what == "bad store.json":
        path.mkdir()
        (path / "store.json").write_text("{")
    assert main(["store", cmd, str(path)]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err and str(path) in lines[0]


def test_cli_store_stats_and_verify_report_recovery_losses(tmp_path, capsys) -> None:
    from hindsight.cli import main

    with shard(tmp_path) as sh:
        _, acks = fill(sh, 20)
    assert main(["store", "stats", str(tmp_path)]) == 0 and main(["store", "verify", str(tmp_path)]) == 0
    _flip(tmp_path / "seg-00000001.log", [a for a in acks if a.segment == 1][0].offset + 30)
    capsys.readouterr()
    assert main(["store", "stats", str(tmp_path)]) == 1  # damage not yet recovered
    assert "crc_mismatch" in capsys.readouterr().out
    shard(tmp_path).close()  # recovery skips the record and keeps its bytes aside
    assert main(["store", "stats", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGE" in out and ".dropped file(s)" in out and "bytes lost to recovery" in out
    assert main(["store", "verify", str(tmp_path)]) == 1  # after recovery the loss is still visible
    out = capsys.readouterr().out
    assert "CORRUPT" in out and "dropped_file" in out

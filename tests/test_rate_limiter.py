"""Samples-per-insert limiter: hand-computed bounds and no deadlock."""

from __future__ import annotations

import pytest

from learner.rate_limiter import RateLimiter


def test_nothing_before_min_replay():
    lim = RateLimiter(samples_per_insert=8, batch_size=4, min_replay=100, tolerance=0.5)
    assert lim.updates_allowed(inserted=99, updates=0) == 0
    assert lim.may_insert(inserted=99, updates=0)


@pytest.mark.parametrize(
    "inserted, updates, allowed, may_insert",
    [
        # target = (inserted - 100) * 8 / 4 = 2 per transition past min_replay
        (110, 0, 31, True),  # target 20, upper 30 -> floor(30)+1-0; lower 10 > 0 updates? see below
        (110, 10, 21, True),  # lower = floor(20*0.5)=10 -> 10 >= 10 may insert
        (110, 9, 22, False),  # learner behind: collectors wait
        (110, 31, 0, True),  # learner ahead: it waits for data
    ],
    ids=["start", "at-lower", "below-lower", "above-upper"],
)
def test_bounds_hand_computed(inserted, updates, allowed, may_insert):
    lim = RateLimiter(samples_per_insert=8, batch_size=4, min_replay=100, tolerance=0.5)
    assert lim.updates_allowed(inserted, updates) == allowed
    if updates == 0:
        return
    assert lim.may_insert(inserted, updates) is may_insert


def test_one_side_can_always_move():
    lim = RateLimiter(samples_per_insert=64, batch_size=256, min_replay=1000, tolerance=0.2)
    for inserted in range(0, 20000, 137):
        for updates in range(0, 600, 7):
            assert lim.may_insert(inserted, updates) or lim.updates_allowed(inserted, updates) > 0


@pytest.mark.parametrize(
    "updates, max_lag_steps, may_insert",
    [
        # inserted 110: target 20, the relative lower bound 10; a lag of 2 env steps is
        # 2 * 8 / 4 = 4 updates, so the lower bound becomes 16
        (15, 2, False),
        (16, 2, True),
        (10, None, True),  # without the cap the relative band alone: 10 >= 10
        (10, 100, True),  # a cap looser than the band changes nothing
        (19, 0, False),  # no lag at all: collection waits for every update it is owed
        (20, 0, True),
    ],
)
def test_max_lag_caps_how_far_the_learner_trails(updates, max_lag_steps, may_insert):
    lim = RateLimiter(samples_per_insert=8, batch_size=4, min_replay=100, tolerance=0.5)
    assert lim.may_insert(110, updates, max_lag_steps) is may_insert


def test_one_side_can_always_move_with_a_lag_cap():
    lim = RateLimiter(samples_per_insert=64, batch_size=256, min_replay=1000, tolerance=0.2)
    for lag in (0, 1, 50, 1000):
        for inserted in range(0, 20000, 137):
            for updates in range(0, 600, 7):
                assert lim.may_insert(inserted, updates, lag) or lim.updates_allowed(inserted, updates) > 0


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="samples_per_insert"):
        RateLimiter(0, 256, 10)
    with pytest.raises(ValueError, match="spi_tolerance"):
        RateLimiter(1, 256, 10, tolerance=1.5)


@pytest.mark.parametrize(
    "inserted, updates, paid",
    [
        (99, 5, 0),  # below min_replay: no update stands for anything yet
        (18000, 0, 0),  # no update yet
        # 8 HalfCheetah envs landed 18,000 steps before the first update: 50 updates at
        # 2 updates per env step (spi 8 / batch 4) stand for min_replay + 25 steps, not 18,000
        (18000, 50, 125),
        (110, 31, 110),  # the tolerance let the learner run ahead: capped by what was inserted
        (111, 21, 110),  # 100 + 21 / 2 = 110.5 -> 110
    ],
)
def test_env_steps_paid_is_the_learners_axis(inserted, updates, paid):
    lim = RateLimiter(samples_per_insert=8, batch_size=4, min_replay=100, tolerance=0.5)
    assert lim.env_steps_paid(inserted, updates) == paid


def test_learner_threads_are_the_whole_cores_it_holds():
    from learner.core import threads_for

    # a fractional share rounds down: the rest of that core runs other actors
    assert [threads_for(c) for c in (0.05, 0.83, 1.0, 1.35, 2.0, 2.7, 8.0)] == [1, 1, 1, 1, 2, 2, 8]
    # the two-branch update takes a thread on a tenth of a core or more beyond the first
    cpus = (0.05, 0.83, 1.0, 1.05, 1.1, 1.35, 2.0, 2.05, 2.1, 2.7, 8.0)
    assert [threads_for(c, branches=True) for c in cpus] == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 8]


def test_a_learner_the_limiter_holds_backs_off_and_an_allowed_update_resets_it():
    """train() calls that the limiter allows nothing pause 20, 40, 80, 160, 160 ms (each is a
    round trip through the driver's loop); the first call with updates resets the pause."""
    import numpy as np

    from hindsight.config import LearnerConfig
    from learner.actor import IDLE_PAUSE_MAX_S, IDLE_PAUSE_S, Learner
    from learner.sac.config import SACConfig
    from relabel_service.core import TransitionBatch

    cfg = LearnerConfig(num_cpus=1, min_replay=20, sac=SACConfig(hidden_sizes=(16, 16), batch_size=8, compile=False))
    learner = Learner(3, 2, 2, 0, cfg, 0.99, seed=0)  # eager: no warm-up call
    pauses = []
    for _ in range(5):
        pauses.append(learner._idle_pause)
        assert learner.train(5)["updates_done"] == 0
    assert pauses == [IDLE_PAUSE_S, 2 * IDLE_PAUSE_S, 4 * IDLE_PAUSE_S, IDLE_PAUSE_MAX_S, IDLE_PAUSE_MAX_S]
    assert learner._idle_pause == IDLE_PAUSE_MAX_S
    rng = np.random.default_rng(0)
    n = 40
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    learner.ingest(TransitionBatch(obs=f32(n, 3), action=np.tanh(f32(n, 2)), reward=f32(n), next_obs=f32(n, 3),
                                   terminated=np.zeros(n, np.float32), task=f32(n, 2), reward_inputs=f32(n, 0)))
    assert learner.train(5)["updates_done"] > 0
    assert learner._idle_pause == IDLE_PAUSE_S

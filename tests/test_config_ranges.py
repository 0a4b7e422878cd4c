"""Declared ranges: every bounded config key is checked at load, before Ray or a run dir.

The cases are generated from the fields' own metadata (``configtools.field_ranges``), so
a new bounded field is covered without editing this file.
"""

from __future__ import annotations

import pytest

from hindsight.cli import main
from hindsight.config import ExperimentConfig, load_config
from hindsight.configtools import ConfigError, Range, RangeError, field_ranges

RANGES = field_ranges(ExperimentConfig)
LIST_KEYS = {"learner.sac.hidden_sizes", "rollout.autoscale"}


def _outside(rng: Range) -> list[float]:
    """Values just outside each bound (an integer step below/above a closed one)."""
    out = []
    if rng.lo is not None:
        out.append(rng.lo if rng.lo_open else rng.lo - 1)
    if rng.hi is not None:
        out.append(rng.hi if rng.hi_open else rng.hi + 1)
    return out


CASES = [(k, v) for k, r in sorted(RANGES.items()) for v in _outside(r)]


def test_the_issue_s_keys_are_declared():
    for key in ("rollout.num_workers", "rollout.envs_per_worker", "relabel.batch_trajectories",
                "learner.updates_per_call", "store.num_shards", "store.max_segments", "eval.every_steps",
                "learner.spi_tolerance", "relabel.strategy_cfg.her_relabel_ratio", "learner.sac.tau"):
        assert key in RANGES, key


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v:g}" for k, v in CASES])
def test_every_bounded_key_rejects_a_value_just_outside(key, value):
    text = f"[{value:g}]" if key in LIST_KEYS else f"{value:g}"
    with pytest.raises(RangeError) as e:
        load_config(None, [f"{key}={text}"])
    assert e.value.key == key
    assert str(RANGES[key]) in str(e.value)


@pytest.mark.parametrize("key, value", CASES[:12], ids=[f"{k}={v:g}" for k, v in CASES[:12]])
def test_yaml_file_values_are_checked_with_the_full_key(key, value, tmp_path):
    *sections, leaf = key.split(".")
    text, indent = "", ""
    for s in sections:
        text += f"{indent}{s}:\n"
        indent += "  "
    text += f"{indent}{leaf}: {f'[{value:g}]' if key in LIST_KEYS else f'{value:g}'}\n"
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(RangeError, match=rf"^{key.replace('.', '[.]')}: "):
        load_config(str(p))


def test_inside_values_load():
    cfg = load_config(None, ["rollout.num_workers=1", "learner.spi_tolerance=0", "store.num_shards=1",
                             "relabel.strategy_cfg.her_relabel_ratio=1.0", "rollout.autoscale=[1, 3]"])
    assert cfg.rollout.autoscale == (1, 3)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["rollout.autoscale=[3, 2]"], "rollout.autoscale"),
        (["rollout.autoscale=[1, 2, 3]"], "rollout.autoscale"),
        (["rollout.autoscale=[3, 5]", "rollout.num_workers=2"], "rollout.num_workers"),
        (["learner.min_replay=100", "learner.replay_capacity=50"], "learner.min_replay"),
        (["learner.sac.log_std_min=3"], "learner.sac.log_std_min"),
    ],
    ids=["min-above-max", "three-values", "workers-outside-autoscale", "min-replay-above-capacity", "log-std"],
)
def test_cross_field_rules_name_the_key(overrides, key):
    with pytest.raises(RangeError) as e:
        load_config(None, overrides)
    assert e.value.key == key


def test_nan_is_outside_every_range():
    with pytest.raises(RangeError, match="learner.sac.tau"):
        load_config(None, ["learner.sac.tau=.nan"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nrollout:\n  num_workers: [1, 2\n  envs_per_worker: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(e.value).startswith(f"{p}:")
    assert "YAML syntax error" in str(e.value)
    line = int(str(e.value)[len(str(p)) + 1 :].split(":")[0])
    assert 3 <= line <= 4


@pytest.mark.parametrize(
    "key, value",
    [("rollout.num_workers", 0), ("rollout.envs_per_worker", 0), ("relabel.batch_trajectories", 0),
     ("learner.updates_per_call", 0), ("store.num_shards", 0), ("store.max_segments", 0), ("eval.every_steps", 0)],
)
def test_cli_rejects_before_ray_and_before_a_run_dir(key, value, tmp_path, capsys):
    import ray

    logdir = tmp_path / "runs"
    rc = main(["train", "--config", "smoke", "--logdir", str(logdir), "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert key in err and "[1, inf)" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not logdir.exists()
    assert not ray.is_initialized()


def test_the_config_table_shows_each_range(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "rollout.num_workers = 2  in [1, inf)" in out
    assert "learner.spi_tolerance = 0.25  in [0, 1)" in out

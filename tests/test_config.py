"""Config loading: YAML + overrides, typo detection naming the key, family defaults."""

from __future__ import annotations

import pytest

from hindsight.config import ConfigError, ExperimentConfig, dump_config, load_config
from hindsight.configtools import apply_overrides, from_dict


def test_defaults_are_point_reacher_with_air():
    cfg = load_config()
    assert cfg.env.family == "point_reacher"
    assert cfg.relabel.strategy == "air"


def test_override_nested_value_and_type():
    cfg = load_config(None, ["learner.sac.batch_size=64", "store.num_shards=3", "relabel.strategy=random"])
    assert cfg.learner.sac.batch_size == 64
    assert cfg.store.num_shards == 3
    assert cfg.relabel.strategy == "random"


@pytest.mark.parametrize(
    "override, named, suggestion",
    [
        ("learner.sac.batch_szie=64", "learner.sac.batch_szie", "batch_size"),
        ("store.num_shard=3", "store.num_shard", "num_shards"),
        ("rolout.num_workers=3", "rolout", "rollout"),
    ],
    ids=["nested-typo", "section-typo", "top-level-typo"],
)
def test_unknown_key_names_it_and_the_nearest(override, named, suggestion):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert repr(named) in str(e.value)
    assert suggestion in str(e.value)


def test_unknown_key_in_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("env:\n  familly: point_reacher\n")
    with pytest.raises(ConfigError, match="env.familly.*family"):
        load_config(str(p))


def test_wrong_type_and_bad_literal_are_named():
    with pytest.raises(ConfigError, match="store.num_shards: expected an integer"):
        load_config(None, ["store.num_shards=two"])
    with pytest.raises(ConfigError, match="store.fsync"):
        load_config(None, ["store.fsync=sometimes"])


def test_unknown_family_and_strategy_are_named():
    with pytest.raises(ConfigError, match="'point_reachr'.*point_reacher"):
        load_config(None, ["env.family=point_reachr"])
    with pytest.raises(ConfigError, match="'airr'.*air"):
        load_config(None, ["relabel.strategy=airr"])


def test_more_relabel_workers_than_shards_is_named():
    """Relabel worker r reads shards r, r + R, ...: a worker beyond the shards would start
    and never get a trajectory."""
    with pytest.raises(ConfigError, match=r"relabel.num_workers: 3 .*store.num_shards 2.*1 would have none"):
        load_config(None, ["relabel.num_workers=3"])
    # the order of the overrides does not matter: the check runs on the whole config
    assert load_config(None, ["relabel.num_workers=3", "store.num_shards=3"]).relabel.num_workers == 3


def test_family_sac_defaults_fill_unset_fields_only():
    cheetah = load_config(None, ["env.family=half_cheetah_mo"])
    reacher = load_config(None, ["env.family=point_reacher"])
    assert cheetah.learner.sac != reacher.learner.sac
    pinned = load_config(None, ["env.family=half_cheetah_mo", "learner.sac.batch_size=32"])
    assert pinned.learner.sac.batch_size == 32


def test_dump_then_load_round_trips(tmp_path):
    cfg = load_config(None, ["seed=7", "env.family=test_goal"])
    p = tmp_path / "config.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(str(p)) == cfg


def test_every_shipped_config_loads():
    from hindsight.config import CONFIG_DIR

    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files, "deploy/configs is empty"
    for f in files:
        assert isinstance(load_config(str(f)), ExperimentConfig), f


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(from_dict(ExperimentConfig, {}), ["seed"])

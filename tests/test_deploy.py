"""The deploy files a user applies: they parse, Ray and KubeRay would accept them, and the
Dockerfile installs exactly what ``make run`` installs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_cluster_yaml_passes_ray_s_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    validate_config(raw)  # the schema, before Ray fills in its defaults
    config = prepare_config(raw)  # provider defaults merged: what `ray up` validates
    validate_config(config)
    types = config["available_node_types"]
    head = config["head_node_type"]
    workers = {k: v for k, v in types.items() if k != head}
    cpu = [v for v in workers.values() if v["resources"].get("CPU", 0) > 0 and not v["resources"].get("GPU")]
    gpu = [v for v in workers.values() if v["resources"].get("GPU", 0) >= 1]
    assert cpu and any(v["max_workers"] > v["min_workers"] for v in cpu), "an autoscaling CPU worker group"
    assert gpu, "a GPU learner node type"
    assert "docker" in config and config["docker"]["image"]


def test_cluster_yaml_validation_catches_a_bad_field():
    """The check above can fail: a misspelt top-level key is rejected by Ray's schema."""
    import jsonschema
    from ray.autoscaler._private.util import validate_config

    raw = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
    raw["max_wrokers"] = raw.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(raw)


def _cluster_spec_ok(spec: dict, where: str) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    _pod_ok(head["template"], f"{where}.headGroupSpec")
    groups = spec["workerGroupSpecs"]
    assert groups, where
    for g in groups:
        for key in ("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in g, f"{where}: worker group lacks {key}"
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
        _pod_ok(g["template"], f"{where}.{g['groupName']}")
    assert any(g["maxReplicas"] > g["minReplicas"] for g in groups), "an autoscaling worker group"
    assert any("nvidia.com/gpu" in c["resources"]["limits"] for g in groups for c in g["template"]["spec"]["containers"])


def _pod_ok(template: dict, where: str) -> None:
    containers = template["spec"]["containers"]
    assert containers, where
    for c in containers:
        assert c["name"] and c["image"], where


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_carry_the_required_fields(name):
    doc = yaml.safe_load((DEPLOY / "kuberay" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["metadata"]["name"]
    if name == "raycluster.yaml":
        assert doc["kind"] == "RayCluster"
        _cluster_spec_ok(doc["spec"], name)
    else:
        assert doc["kind"] == "RayJob"
        assert doc["spec"]["entrypoint"].startswith("hindsight train --address auto")
        _cluster_spec_ok(doc["spec"]["rayClusterSpec"], name)


def test_rayjob_entrypoint_parses_with_the_real_cli():
    from hindsight.cli import build_parser

    doc = yaml.safe_load((DEPLOY / "kuberay" / "rayjob.yaml").read_text())
    argv = shlex.split(doc["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[1:])
    assert args.address == "auto" and args.config


def _make_recipe(target: str) -> list[str]:
    """The recipe lines `make TARGET` runs on a fresh machine: prerequisites first (a
    small reading of the Makefile's rules, variables expanded)."""
    text = (ROOT / "Makefile").read_text()
    var = dict(re.findall(r"^(\w+)\s*[?:]?=\s*(.+)$", text, flags=re.M))

    def expand(x: str) -> str:
        for _ in range(5):
            x = re.sub(r"\$\((\w+)\)", lambda m: var.get(m.group(1), m.group(0)), x)
        return x

    rules: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("\t") and current is not None:
            rules[current][1].append(expand(line.strip()))
        elif re.match(r"^[^\s#.][^=]*:(?!=)", line):
            name, deps = line.split(":", 1)
            current = expand(name.strip())
            rules[current] = ([expand(d) for d in deps.split()], [])
        else:
            current = None if not line.strip() or not line.startswith("\t") else current
    out: list[str] = []
    seen: set[str] = set()

    def visit(t: str) -> None:
        if t in seen or t not in rules:
            return
        seen.add(t)
        for d in rules[t][0]:
            visit(d)
        out.extend(rules[t][1])

    visit(target)
    return out


def _makefile_pip_steps() -> list[list[str]]:
    steps = []
    for cmd in _make_recipe("run"):
        if "pip install" in cmd:
            cmd = cmd.split("||")[-1]  # `import torch || pip install`: installs when missing
            steps.append(shlex.split(cmd.split("pip install", 1)[1]))
    return steps


def _dockerfile_pip_steps() -> list[list[str]]:
    text = (ROOT / "Dockerfile").read_text()
    args = {k: shlex.split(v)[0] for k, v in re.findall(r"^ARG (\w+)=(.+)$", text, flags=re.M)}
    steps = []
    for line in text.splitlines():
        if line.startswith("RUN") and "pip install" in line:
            cmd = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), line)
            steps.append(shlex.split(cmd.split("pip install", 1)[1]))
    return steps


def test_dockerfile_installs_what_make_run_installs():
    make, docker = _makefile_pip_steps(), _dockerfile_pip_steps()
    assert len(make) == 3, make  # pip itself, the pinned torch, the package
    assert docker == make
    assert any(a.startswith("torch==") for a in make[1]), "torch is pinned and installed before the package"


def test_readme_has_the_cluster_section():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run on a cluster", 1)[1].split("\n## ", 1)[0]
    for needle in ("ray up deploy/cluster.yaml", "kubectl apply", "hindsight scale", "--address auto", "docker build"):
        assert needle in section, needle

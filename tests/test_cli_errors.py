"""CLI errors: one line on stderr, no traceback, and an exit code per kind of failure
(0 ok; 1 run failed / corruption; 2 usage, config error or missing path; 130 interrupted)."""

from __future__ import annotations

import pytest

from hindsight import cli
from hindsight.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, main


def _one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("name: x\n")
    return d


@pytest.mark.parametrize("n", ["-2", "-1"])
def test_scale_rejects_a_negative_size(run_dir, n, capsys):
    assert main(["scale", str(run_dir), n]) == EXIT_USAGE
    assert ">= 0" in _one_line(capsys.readouterr().err)
    assert not (run_dir / "control.json").exists()


def test_scale_on_a_missing_run_dir_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["scale", str(missing), "3"]) == EXIT_USAGE
    assert str(missing) in _one_line(capsys.readouterr().err)


def test_resume_of_a_missing_dir_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == EXIT_USAGE
    assert "nope" in _one_line(capsys.readouterr().err)


def test_yaml_syntax_error_is_one_line_naming_the_file(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("rollout: {num_workers: 2\n")
    assert main(["train", "--config", str(p), "--logdir", str(tmp_path / "runs")]) == EXIT_USAGE
    assert str(p) in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def _raiser(exc: BaseException):
    def f(args):
        raise exc

    return f


@pytest.mark.parametrize(
    "exc, code",
    [
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
        (FileNotFoundError("no such file: /x/y"), EXIT_USAGE),
        (cli.RunFailed("learner died; resume with: hindsight train --resume R"), EXIT_FAILED),
        (RuntimeError("boom\nmore detail"), EXIT_FAILED),
    ],
    ids=["interrupted", "missing-path", "run-failed", "unexpected"],
)
def test_each_kind_of_failure_has_its_code_and_one_line(monkeypatch, exc, code, capsys):
    monkeypatch.setattr(cli, "_envs", _raiser(exc))
    assert main(["envs"]) == code
    _one_line(capsys.readouterr().err)


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(cli, "_envs", _raiser(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "envs"])

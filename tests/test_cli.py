"""The command line explains itself: presets with what they are for, every argument with help and default."""

import argparse
import os

import pytest

from segpipe.cli import build_parser, main


def test_preset_list_says_what_each_preset_is_for(capsys):
    main(["preset"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("camvid-cpu ") and "2 CPU cores" in line for line in lines)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # a name and a description on every line


def test_every_argument_has_help_and_defaults_are_shown():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subparsers.choices.items():
        assert command.description and command.description[0].isupper(), name
        for action in command._actions:
            assert action.help, f"segpipe {name}: argument {action.dest} has no help"
    predict_help = subparsers.choices["predict"].format_help()
    assert "(default: export/model.onnx)" in predict_help and "(default: predictions)" in predict_help


def test_clean_outputs_removes_the_stage_outputs_and_nothing_of_the_users(tmp_path):
    import shutil

    from segpipe.stage_outputs import remove_outputs
    from tests.conftest import REPO

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    source = tmp_path / "my-dataset"
    (source / "images").mkdir(parents=True)
    (source / "images/a.png").write_bytes(b"mine")
    (tmp_path / "data/raw/images").mkdir(parents=True)
    (tmp_path / "data/downloads").mkdir()
    (tmp_path / "data/downloads/camvid.zip").write_bytes(b"downloaded")
    (tmp_path / "data/notes.txt").write_text("mine")
    (tmp_path / "data/source").symlink_to(source, target_is_directory=True)
    (tmp_path / "models/checkpoints").mkdir(parents=True)
    (tmp_path / "models/model.pt").write_bytes(b"x")
    (tmp_path / "models/my_weights.pt").write_bytes(b"mine")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text("{}")
    removed = {p.as_posix() for p in remove_outputs(tmp_path)}
    assert {"data/raw", "data/source", "models/model.pt", "models/checkpoints", "reports/metrics.json"} <= removed
    assert (source / "images/a.png").read_bytes() == b"mine"  # the link went, not what it pointed at
    for kept in ("data/downloads/camvid.zip", "data/notes.txt", "models/my_weights.pt", "my-dataset/images/a.png"):
        assert (tmp_path / kept).exists(), kept
    assert not (tmp_path / "data/raw").exists() and not (tmp_path / "data/source").is_symlink()


def test_the_flow_command_lines_explain_themselves_and_refuse_what_they_do_not_know(tmp_path):
    """`python -m flows.sweep --help` used to start the sweep (arguments were ignored); now it only explains, and
    an unknown argument stops before any flow starts."""
    import subprocess
    import sys

    from tests.conftest import REPO

    for module in ("flows.sweep", "flows.pipeline"):
        shown = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert shown.returncode == 0 and f"usage: python -m {module}" in shown.stdout, shown.stderr
        assert not list(tmp_path.iterdir())  # nothing started, nothing written
    refused = subprocess.run([sys.executable, "-m", "flows.sweep", "--budget", "10"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert refused.returncode == 2 and "unrecognized arguments: --budget 10" in refused.stderr


def test_pipeline_overrides_on_the_command_line_are_read_as_params_values(monkeypatch):
    import flows.pipeline
    from flows.command_line import dotted_value

    assert dotted_value("train.optimizer.lr=0.001") == ("train.optimizer.lr", 0.001)
    assert dotted_value("model.weights=null") == ("model.weights", None)
    assert dotted_value("augment.crop_size=[128, 96]") == ("augment.crop_size", [128, 96])
    given = {}
    monkeypatch.setattr(flows.pipeline, "segmentation_pipeline", lambda **kwargs: given.update(kwargs))
    monkeypatch.setattr(flows.pipeline, "sigterm_exits", lambda: None)
    flows.pipeline.main(["--set", "train.epochs=3", "--set", "model.name=unet", "--experiment-name", "short"])
    assert given == {"overrides": {"train.epochs": 3, "model.name": "unet"}, "project": ".",
                     "experiment_name": "short"}
    with pytest.raises(SystemExit):
        flows.pipeline.main(["--set", "no-equals-sign"])

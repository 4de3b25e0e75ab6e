"""The command line explains itself: presets with what they are for, every argument with help and default."""

import argparse

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

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

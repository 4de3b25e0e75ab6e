from pathlib import Path

import pytest
import yaml

from segpipe.errors import SegpipeError
from segpipe.params import Params, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_project_params_and_presets_are_valid():
    from segpipe import presets

    params = load_params(REPO / "params.yaml")
    assert params.ingest.format == "synthetic"
    for name in presets.available():
        presets.preset_text(name)


def test_the_full_budget_pretraining_experiment_fine_tunes_as_camvid_cpu_trains():
    from segpipe import presets

    cpu, experiment = (parse_params(yaml.safe_load(presets.preset_text(name)))
                       for name in ("camvid-cpu", "camvid-pretrain-full"))
    assert experiment.augment == cpu.augment and experiment.ingest == cpu.ingest
    same = ("epochs", "batch_size", "optimizer", "schedule", "loss")
    assert {key: getattr(experiment.train, key) for key in same} == {key: getattr(cpu.train, key) for key in same}
    assert experiment.train.samples_per_epoch == 367 and experiment.train.label_fraction == 0.1  # 37 labelled
    assert (experiment.train.amp, experiment.train.channels_last) == ("off", True)  # the same on every machine


def test_a_bare_off_is_the_amp_setting_off_as_dvc_exp_run_writes_it():
    assert parse_params(yaml.safe_load("train:\n  amp: off\n")).train.amp == "off"  # YAML 1.1 reads it as false
    with pytest.raises(SegpipeError, match="train.amp: Input should be"):
        parse_params(yaml.safe_load("train:\n  amp: on\n"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"ingest": {"formt": "synthetic"}}, "unknown key 'ingest.formt'"),
        ({"base": {"seed": "abc"}}, "base.seed: Input should be a valid integer"),
        ({"ingest": {"format": "cocoa"}}, "ingest.format: Input should be 'synthetic', 'mask_folder', 'coco', "
                                          "'coco_panoptic', 'cityscapes', 'yolo_seg' or 'voc'"),
        ({"ingest": {"format": "coco"}}, "format 'coco' needs ingest.source"),
        ({"split": {"val": 0.6, "test": 0.5}}, "split.val + split.test must be below 1"),
        ({"ingest": {"format": "mask_folder"}}, "needs ingest.source"),
        ({"augment": {"scale": [1.0, 0.5]}}, "augment.scale: needs 0 < low <= high"),
        ({"train": {"optimizer": {"lr": "0.003"}}}, "train.optimizer.lr: Input should be a valid number; write it "
                                                    "without quotes (got '0.003')"),
        ({"train": {"channels_last": 1}}, "train.channels_last: must be auto, true or false (got 1)"),
        ({"augmnet": {"hflip": 0.5}}, "unknown key 'augmnet' (did you mean 'augment'?)"),
        ({"train": {"optimzer": {}}}, "unknown key 'train.optimzer' (did you mean 'train.optimizer'?)"),
        ({"ingest": {"format": "mask_folder", "source": "s", "mask_folder": {
            "classes": [{"name": "bg", "color": [0, 0, 0]}, {"name": "cell", "color": [9, 9, 9]}],
            "label_map": {255: 2}}}}, "label_map maps 255 to 2, but the classes are 0..1 (bg, cell)"),
        ({"ingest": {"mask_folder": {"label_map": {7: "3"}}}}, "ingest.mask_folder.label_map.7: Input should be a "
                                                               "valid integer"),
        ({"train": {"optimizer": {"lr": float("inf")}}}, "train.optimizer.lr: Input should be a finite number"),
        ({"train": {"grad_clip": float("nan")}}, "train.grad_clip: Input should be a finite number"),
        ({"augment": {"normalize": {"std": [0.2, 0.0, 0.2]}}}, "augment.normalize.std: every channel's std must be "
                                                               "above 0"),
        ({"augment": {"normalize": {"std": [0.2, float("nan"), 0.2]}}}, "augment.normalize.std.1: Input should be a "
                                                                        "finite number"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(data, expected):
    with pytest.raises(SegpipeError) as info:
        parse_params(data)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_params_file_errors(tmp_path):
    with pytest.raises(SegpipeError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed")
    with pytest.raises(SegpipeError, match="not valid YAML"):
        load_params(bad)


def test_preset_command_writes_params(tmp_path, capsys):
    from segpipe.cli import main

    target = tmp_path / "params.yaml"
    target.write_text("base: {seed: 1}\n")
    main(["preset", "camvid-cpu", "--params", str(target)])
    assert load_params(target).ingest.format == "mask_folder"
    assert capsys.readouterr().out.rstrip().endswith("now run: dvc repro")
    written = yaml.safe_load(target.read_text())
    assert set(written) == set(Params.model_fields)  # every section, as dvc.yaml's params need
    assert (tmp_path / "params.yaml.bak").read_text() == "base: {seed: 1}\n"
    main(["preset", "instance", "--params", str(target)])  # a second preset keeps the first backup
    assert (tmp_path / "params.yaml.bak").read_text() == "base: {seed: 1}\n"
    assert load_params(tmp_path / "params.yaml.2.bak").ingest.format == "mask_folder"
    main(["preset", "instance", "--params", str(target)])
    main(["preset", "instance", "--params", str(target)])  # a file that already has a backup gets no second one
    assert sorted(p.name for p in tmp_path.glob("*.bak")) == ["params.yaml.2.bak", "params.yaml.3.bak",
                                                              "params.yaml.bak"]
    capsys.readouterr()
    main(["preset", "camvid-pretrain-full", "--params", str(target)])
    assert "or python -m flows.sweep (the experiment in orchestration.sweep)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["preset", "no-such-preset", "--params", str(target)])

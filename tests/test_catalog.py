"""The model catalog is the one place a model is added, and the package layers stay in order: params never load
modelling code, only segpipe.tracking talks to MLflow, and no module closes an import circle."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from segpipe import catalog
from segpipe.errors import SegpipeError
from segpipe.import_graph import PACKAGES, import_circles, import_graph, imported_names, module_name
from segpipe.params import parse_params
from tests.conftest import ALL_STAGES, REPO, segpipe_cli, staged_project, tiny_train_params


def test_reading_params_loads_neither_torch_nor_the_tasks():
    probe = ("import sys, segpipe.params, segpipe.stage_deps; print(sorted(m for m in sys.modules "
             "if m == 'torch' or m.startswith(('segpipe.tasks', 'segpipe.models'))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_project_has_no_import_circle():
    assert import_circles(import_graph(REPO)) == []


def test_only_the_tracking_package_imports_mlflow():
    importers = set()
    for path in (p for package in PACKAGES for p in (REPO / package).rglob("*.py")):
        name = module_name(path, REPO)
        if not name.startswith("segpipe.tracking") and any(
                imported.split(".")[0] == "mlflow" for imported in imported_names(path, name)):
            importers.add(name)
    assert importers == set()


def test_a_circle_closed_inside_a_function_is_found_and_one_under_type_checking_is_not(tmp_path):
    package = tmp_path / "segpipe"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low/__init__.py").write_text("from segpipe.low.base import thing\n")  # a package and its own module
    (package / "low/base.py").write_text("from segpipe.low.util import x\nthing = 1\n")
    (package / "low/util.py").write_text("x = 1\n")
    (package / "params.py").write_text("def names():\n    from segpipe.tasks import table\n    return table\n")
    (package / "tasks.py").write_text("from segpipe.params import names\ntable = {}\n")
    (package / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from segpipe.params import names\n")
    (package / "other.py").write_text("import segpipe.typed\n")
    assert import_circles(import_graph(tmp_path, ("segpipe",))) == [["segpipe.params", "segpipe.tasks"]]


def test_params_name_the_catalog_problem_in_one_line():
    with pytest.raises(SegpipeError, match=r"model.name: 'unet3' is not in the catalog; choose one of unet, "):
        parse_params({"model": {"name": "unet3"}})
    with pytest.raises(SegpipeError, match=r"task: 'depth' is not a task segpipe has; choose one of semantic, "):
        parse_params({"task": "depth"})
    with pytest.raises(SegpipeError, match=r"model.weights: no published 'full' weights exist for unet; use null, "
                                           r"pretrained or a checkpoint path"):
        parse_params({"model": {"name": "unet", "weights": "full"}})
    with pytest.raises(SegpipeError, match=r"model.name 'unet' does not do task 'instance'; for instance use "
                                           r"maskrcnn_resnet18_fpn"):
        parse_params({"task": "instance", "model": {"name": "unet"}})
    assert parse_params({"model": {"name": "fcn_resnet50", "weights": "backbone"}}).model.weights == "backbone"


class TwoConvs(nn.Module):
    """The smallest semantic model: two convolutions."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, images):
        return self.layers(images)


def build_two_convs(config: dict, published: str | None = None) -> nn.Module:
    return TwoConvs(config["num_classes"])


@pytest.fixture
def two_convs_in_the_catalog():
    catalog.register(catalog.ModelEntry("two_convs", "semantic", "plain", "tests.test_catalog:build_two_convs"))
    yield
    catalog.unregister("two_convs")


def test_a_model_added_by_one_catalog_row_trains_evaluates_exports_and_predicts(tmp_path, capsys,
                                                                              two_convs_in_the_catalog):
    params = tiny_train_params(model={"name": "two_convs"}, train={"epochs": 1, "batch_size": 4, "loader_workers": 0},
                               tracking={"enabled": False})
    project = staged_project(tmp_path, params, ALL_STAGES)
    assert 0 <= json.loads((project / "reports/metrics.json").read_text())["test"]["miou"] <= 1
    assert json.loads((project / "export/model.json").read_text())["model"]["name"] == "two_convs"
    assert json.loads((project / "reports/export.json").read_text())["argmax_agreement"] >= 0.999
    image = sorted((project / "data/raw/images").glob("*.png"))[0]
    for model in ("models/model.pt", "export/model.onnx"):
        code, out, err = segpipe_cli(capsys, "predict", str(image), "--model", str(project / model), "--out",
                                     str(tmp_path / "predicted" / Path(model).suffix[1:]))
        assert code == 0 and "wrote 1" in out, err
    with pytest.raises(SegpipeError, match="model two_convs is already in the catalog"):
        catalog.register(catalog.ModelEntry("two_convs", "semantic", "plain", build_two_convs))

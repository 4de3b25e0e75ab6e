"""dvc.yaml's code dependencies are derived from what each stage imports, and they are complete."""

from pathlib import Path

from segpipe.import_graph import reached_files
from segpipe.stage_deps import differences
from tests.conftest import REPO


def test_dvc_yaml_lists_exactly_the_code_each_stage_imports():
    assert differences(REPO / "dvc.yaml") == []


def test_lazy_imports_count_and_type_checking_imports_do_not(tmp_path):
    package = tmp_path / "segpipe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "top.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                    "    from segpipe import typing_only\n"
                                    "def f():\n    from segpipe.lazy import thing\n    import numpy\n")
    (package / "lazy.py").write_text("from . import sibling\nthing = 1\n")
    (package / "sibling.py").write_text("")
    (package / "typing_only.py").write_text("")
    found = {p.relative_to(tmp_path).as_posix() for p in reached_files("segpipe.top", tmp_path)}
    assert found == {"segpipe/__init__.py", "segpipe/top.py", "segpipe/lazy.py", "segpipe/sibling.py"}


def test_every_stage_depends_on_its_own_module_and_the_ones_that_were_missed():
    from segpipe.stage_deps import _yaml, derived_deps

    stages = _yaml().load((REPO / "dvc.yaml").read_text())["stages"]
    deps = derived_deps(stages, REPO)
    assert all(f"stages/{name}.py" in deps[name] for name in stages)
    # the holes of the hand-written list: train's transforms and dataset, export's trained-model module
    assert {"segpipe/transforms.py", "segpipe/data/dataset.py"} <= set(deps["train"])
    assert "segpipe/trained_model.py" in deps["export"]
    assert "segpipe/training.py" not in deps["ingest"]  # reading params does not pull in modelling code
    assert Path(REPO / "segpipe/catalog.py").is_file() and "segpipe/catalog.py" in deps["ingest"]


def test_catalog_references_count_for_the_stages_that_load_them(tmp_path):
    package = tmp_path / "segpipe"
    package.mkdir()
    for name, text in {"__init__.py": "", "catalog.py": "BUILDERS = {'net': 'segpipe.net:build'}\n",
                       "net.py": "def build(): ...\n", "config.py": "from segpipe.catalog import BUILDERS\n",
                       "factory.py": "from segpipe.catalog import BUILDERS\n"
                                     "def make(name):\n    return load_object(BUILDERS[name])()\n"}.items():
        (package / name).write_text(text)
    reading = {p.name for p in reached_files("segpipe.params", tmp_path)}
    building = {p.name for p in reached_files("segpipe.factory", tmp_path)}
    assert "net.py" not in reading and "net.py" in building

"""The params stage: validate the whole ``params.yaml`` before any other stage runs.

DVC checks that every params key a stage lists exists before it runs the stage, so a misspelt section
(``augmnet:``) or a key missing from an older file would otherwise surface as DVC's "Parameters 'augment' are
missing" instead of segpipe's own "unknown key 'augmnet' (did you mean 'augment'?)". This stage depends on the
file itself, runs whenever it changes, and writes a report whose content does not depend on the values, so that
nothing downstream reruns.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from segpipe.dvc_params import check_listed_params
from segpipe.fsutil import write_json
from segpipe.params import DEFAULT_PARAMS, Params
from segpipe.paths import PARAMS_CHECK
from segpipe.stage import stage_main


def run(params: Params, params_file: Path = DEFAULT_PARAMS, dvc_yaml: Path = Path("dvc.yaml")) -> dict:
    """Check that every key dvc.yaml lists is in ``params_file``; write reports/params_check.json."""
    check_listed_params(yaml.safe_load(params_file.read_text()) or {}, params, dvc_yaml, str(params_file))
    report = {"params": "params.yaml", "valid": True}
    write_json(PARAMS_CHECK, report)
    print("params: params.yaml is valid")
    return report


def main() -> None:
    stage_main("params", run)


if __name__ == "__main__":
    main()

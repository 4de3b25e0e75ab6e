"""Stage 0: validate the whole ``params.yaml`` before any other stage runs.

DVC checks that every params section a stage lists exists before it runs the stage, so a misspelt section
(``augmnet:``) would otherwise surface as DVC's "Parameters 'augment' are missing" instead of segpipe's own
"unknown key 'augmnet' (did you mean 'augment'?)". This stage depends on the file itself, runs whenever it
changes, and writes a report whose content does not depend on the values, so that nothing downstream reruns.
"""

from __future__ import annotations

from segpipe.config import Params
from segpipe.fsutil import write_json
from segpipe.paths import PARAMS_CHECK
from segpipe.stage import stage_main


def run(params: Params) -> dict:
    """Write reports/params_check.json once the params have validated (stage_main loads them)."""
    report = {"params": "params.yaml", "valid": True}
    write_json(PARAMS_CHECK, report)
    print("params: params.yaml is valid")
    return report


def main() -> None:
    stage_main("params", run)


if __name__ == "__main__":
    main()

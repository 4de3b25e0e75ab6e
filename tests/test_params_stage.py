"""The params stage: segpipe's own one-line errors before DVC looks for the keys its stages list."""

import shutil
import subprocess
import sys

from tests.conftest import REPO


def _params_stage(workdir, text: str) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "dvc.yaml", workdir / "dvc.yaml")
    (workdir / "params.yaml").write_text(text)
    return subprocess.run([sys.executable, "-m", "stages.params"], cwd=workdir, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_the_project_params_pass_and_the_report_does_not_depend_on_values(workdir):
    text = (REPO / "params.yaml").read_text()
    assert _params_stage(workdir, text).returncode == 0
    first = (workdir / "reports/params_check.json").read_text()
    assert _params_stage(workdir, text.replace("seed: 0", "seed: 7")).returncode == 0
    assert (workdir / "reports/params_check.json").read_text() == first  # nothing downstream reruns


def test_a_misspelt_section_gets_did_you_mean(workdir):
    done = _params_stage(workdir, (REPO / "params.yaml").read_text().replace("augment:", "augmnet:"))
    assert done.returncode == 1
    assert done.stderr.strip() == ("segpipe params: error: params.yaml: unknown key 'augmnet' "
                                   "(did you mean 'augment'?)")


def test_a_key_that_a_stage_lists_but_the_file_lacks_is_named_with_its_default(workdir):
    text = "".join(line for line in (REPO / "params.yaml").read_text().splitlines(keepends=True)
                   if "warn_ignore_share" not in line)
    done = _params_stage(workdir, text)
    assert done.returncode == 1
    assert "'clean.warn_ignore_share' is missing, and dvc.yaml's stage 'split' depends on it; add it (the default " \
           "is 0.3)" in done.stderr

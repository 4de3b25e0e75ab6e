"""Every Prefect entry point (python -m flows.*) runs with telemetry off and a startup timeout that holds."""

import os
import subprocess
import sys

import pytest

from segpipe.stage import TELEMETRY_OFF
from tests.conftest import REPO

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in TELEMETRY_OFF}


def test_importing_the_flows_sets_prefect_settings():
    code = ("import flows.pipeline; from prefect.settings import get_current_settings as s; "
            "print(s().server.analytics_enabled, s().server.ephemeral.startup_timeout_seconds)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**CLEAN_ENV, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "120"]


@pytest.mark.slow
def test_a_first_flow_run_on_a_fresh_prefect_home_is_quiet(tmp_path):
    code = ("import flows\nfrom prefect import flow\n@flow\ndef hello():\n    return 42\n"
            "assert hello() == 42\nprint('flow ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**CLEAN_ENV, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flow ok" in done.stdout
    assert "telemetry" not in (done.stdout + done.stderr).lower()


def test_prefect_commands_in_the_project_folder_read_its_prefect_toml():
    from tests.servers import bin_path

    done = subprocess.run([bin_path("prefect"), "config", "view", "--show-sources"], cwd=REPO, capture_output=True,
                          text=True, env=CLEAN_ENV)
    assert done.returncode == 0, done.stderr
    assert "PREFECT_SERVER_ANALYTICS_ENABLED='False' (from prefect.toml)" in done.stdout
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS='120' (from prefect.toml)" in done.stdout


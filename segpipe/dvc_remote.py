"""The project's DVC remote as the team's shared store of stage runs: what a flow run pulls and pushes.

DVC's run cache records every stage run (its command, code, params and data hashes, and the outputs they gave).
``dvc push --run-cache`` sends those records and the outputs to the remote; after ``dvc pull --run-cache`` on any
other machine, ``dvc repro --pull`` restores a stage that someone already ran ("Stage 'split' is cached - skipping
run, checking out outputs") and downloads only the outputs it restores. A run with overrides also goes to the
git remote as a DVC experiment (``dvc exp push``), so ``dvc exp list origin`` shows it in every clone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from segpipe.errors import SegpipeError

GIT_REMOTE = "origin"  # the remote a Prefect deployment clones from, and the one experiments go back to


def _dvc(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)


def _last_line(done: subprocess.CompletedProcess) -> str:
    """DVC's summary ("12 files fetched", "Everything is up to date.") or its error, not a warning about an
    output that the committed dvc.lock does not name."""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()
             if line.strip() and not line.startswith("WARNING:")]
    return lines[-1] if lines else "no output"


def default_remote(project: Path, env: dict[str, str]) -> str | None:
    """The name of the project's default DVC remote (``dvc remote add -d``), or None when it has none."""
    done = _dvc(project, env, "remote", "default")
    name = done.stdout.strip()
    return name if done.returncode == 0 and name else None


def pull(project: Path, remote: str, env: dict[str, str]) -> str:
    """Fetch the stage-run records of ``remote`` and check out what the committed dvc.lock and ``.dvc`` files
    name (what is not there yet is skipped: a stage that needs it runs); return DVC's summary line."""
    done = _dvc(project, env, "pull", "--run-cache", "--allow-missing", "--remote", remote)
    if done.returncode != 0:
        raise SegpipeError(f"dvc pull from the DVC remote '{remote}' failed: {_last_line(done)}; check that this "
                           f"machine reaches the remote (`dvc remote list`, its credentials)")
    return _last_line(done)


def push(project: Path, remote: str, env: dict[str, str]) -> str:
    """Send this run's outputs and stage-run records to ``remote``; return DVC's summary line."""
    done = _dvc(project, env, "push", "--run-cache", "--remote", remote)
    if done.returncode != 0:
        raise SegpipeError(f"dvc push to the DVC remote '{remote}' failed: {_last_line(done)}; the results stay "
                           f"in this checkout only")
    return _last_line(done)


def push_experiment(project: Path, name: str, remote: str, env: dict[str, str]) -> str:
    """Push experiment ``name`` to the git remote (its commit) and to the DVC ``remote`` (its outputs)."""
    done = _dvc(project, env, "exp", "push", "--remote", remote, GIT_REMOTE, name)
    if done.returncode != 0:
        raise SegpipeError(f"dvc exp push of experiment {name} to '{GIT_REMOTE}' failed: {_last_line(done)}")
    return _last_line(done)

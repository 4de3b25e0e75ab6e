"""The git checkout a flow run works in: which code it is, and what a commit made in it needs."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


@dataclass(frozen=True)
class CodeVersion:
    """The commit a run's code comes from, the branch (empty when detached) and the git remote it was cloned from."""

    commit: str
    branch: str
    remote: str

    def describe(self) -> str:
        where = f" of {self.remote}" if self.remote else ""
        return f"commit {self.commit or 'unknown (not a git checkout)'}" + (f" ({self.branch}{where})"
                                                                               if self.branch else where)


def code_version(project: Path) -> CodeVersion:
    """The commit checked out in ``project`` (recorded with every flow run)."""
    return CodeVersion(commit=_git(project, "rev-parse", "HEAD"), branch=_git(project, "branch", "--show-current"),
                       remote=_git(project, "remote", "get-url", "origin"))


def fallback_identity(project: Path) -> dict[str, str]:
    """Environment variables that name this machine as the author of a commit (``dvc exp save``) in a checkout
    with no git identity, such as a worker's fresh clone where nobody ran ``git config --global user.email``;
    empty when git has one. Nothing is written to any git config."""
    if _git(project, "config", "user.email") or os.environ.get("GIT_AUTHOR_EMAIL"):
        return {}
    who, email = f"segpipe on {socket.gethostname()}", f"segpipe@{socket.gethostname()}"
    return {"GIT_AUTHOR_NAME": who, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": who, "GIT_COMMITTER_EMAIL": email}

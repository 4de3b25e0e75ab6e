"""``data/source`` and ``data/source-extra``: what DVC hashes as the source data of ingest and pretrain.

DVC decides what is stale from the files a stage depends on, and ``ingest.source`` (or ``pretrain.extra_images``)
may be any folder or archive on the machine, so the ``source`` stage keeps a symbolic link to each: DVC follows
the link and hashes every file under it, so a changed, added or removed source file makes ``dvc status`` name the
stage that reads it and ``dvc repro`` rerun it. The synthetic scenes have no source files (their generator and
params are ingest's dependencies) and a URL is named by its address and ``ingest.sha256`` (the download is kept
under its URL), so for those the link is a small note instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from segpipe.data.sources import is_url
from segpipe.errors import SegpipeError
from segpipe.params import IngestParams, Params
from segpipe.paths import EXTRA_SOURCE, SOURCE

NOTE_HEADER = "# segpipe: the source data as DVC sees it (written by the source stage)\n"


def ingest_note(ingest: IngestParams) -> str:
    """What stands for the source of ``ingest`` when it is no local file ('' for a local folder or archive)."""
    if ingest.format == "synthetic":
        return "synthetic scenes: generated from ingest.synthetic and base.seed"
    if is_url(ingest.source or ""):
        return f"url: {ingest.source} (sha256: {ingest.sha256})"
    return ""


def link_sources(params: Params) -> dict[str, str]:
    """Point data/source at ``ingest.source`` and data/source-extra at ``pretrain.extra_images``; return what
    each link now stands for."""
    note = ingest_note(params.ingest)
    extra = params.pretrain.extra_images
    return {"ingest.source": update_link(SOURCE, None if note else params.ingest.source, note, "ingest.source"),
            "pretrain.extra_images": update_link(EXTRA_SOURCE, extra, "" if extra else "no extra images",
                                                 "pretrain.extra_images")}


def _ours(link: Path) -> bool:
    """Whether ``link`` is absent or something this module wrote (a link, or a note), never the user's own data."""
    if link.is_symlink() or not link.exists():
        return True
    return link.is_file() and link.read_text(errors="replace").startswith(NOTE_HEADER)


def update_link(link: Path, source: str | None, note: str = "", key: str = "the source") -> str:
    """Make ``link`` a symbolic link to the local folder or archive ``source`` (the params' ``key``), or a file
    holding ``note`` when there is no local source; return what it now stands for."""
    if not _ours(link):
        raise SegpipeError(f"{link} is not segpipe's link to the source data (it holds files of its own); move it "
                           f"elsewhere, segpipe keeps this path for the link")
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    if note:
        temporary.write_text(f"{NOTE_HEADER}{note}\n")
        os.replace(temporary, link)
        return note
    target = Path(source or "").expanduser().resolve()
    if not target.exists():
        url = " an http(s) URL with ingest.download: true," if key == "ingest.source" else ""
        raise SegpipeError(f"{key} {source} does not exist on this machine ({socket.gethostname()}); every machine "
                           f"that runs the pipeline must reach the data: use a path they all mount (NFS),{url} or "
                           f"data inside the project tracked with `dvc add` and pushed to the DVC remote "
                           f"(`dvc push`), which each run pulls")
    place = link.parent.resolve() / link.name  # the link itself, not what it points at now
    if target == place or place in target.parents:
        raise SegpipeError(f"{source} lies inside {link}, segpipe's own link; point the params at the data itself")
    temporary.symlink_to(target, target_is_directory=target.is_dir())
    os.replace(temporary, link)  # a link replaces a link (or the note) in one step; what it pointed at stays
    return str(target)

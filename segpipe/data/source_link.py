"""``data/source``: what DVC hashes as the source data of ingest.

DVC decides what is stale from the files a stage depends on, and ``ingest.source`` may be any folder or archive
on the machine, so the ``source`` stage keeps ``data/source`` as a symbolic link to it: DVC follows the link and
hashes every file under it, so a changed, added or removed source file makes ``dvc status`` name ingest and
``dvc repro`` rerun it. The synthetic scenes have no source files (their generator and params are ingest's
dependencies) and a URL is named by its address and ``ingest.sha256`` (the download is kept under its URL), so
for those ``data/source`` is a small note instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from segpipe.config import IngestParams
from segpipe.data.sources import is_url
from segpipe.errors import SegpipeError

NOTE_HEADER = "# segpipe: ingest.source as DVC sees it (written by the source stage)\n"


def describe(ingest: IngestParams) -> str:
    """The note written for sources that are not local files ('' for a local folder or archive)."""
    if ingest.format == "synthetic":
        return f"{NOTE_HEADER}synthetic scenes: generated from ingest.synthetic and base.seed\n"
    if is_url(ingest.source or ""):
        return f"{NOTE_HEADER}url: {ingest.source}\nsha256: {ingest.sha256}\n"
    return ""


def _ours(link: Path) -> bool:
    """Whether ``link`` is absent or something this module wrote (a link, or a note), never the user's own data."""
    if link.is_symlink() or not link.exists():
        return True
    return link.is_file() and link.read_text(errors="replace").startswith(NOTE_HEADER)


def update_link(ingest: IngestParams, link: Path) -> str:
    """Point ``link`` at the local source of ``ingest`` (or write the note); return what it now stands for."""
    if not _ours(link):
        raise SegpipeError(f"{link} is not segpipe's link to ingest.source (it holds files of its own); move it "
                           f"elsewhere, segpipe keeps this path for the link")
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    note = describe(ingest)
    if note:
        temporary.write_text(note)
        os.replace(temporary, link)
        return note.splitlines()[1]
    target = Path(ingest.source or "").expanduser().resolve()
    if not target.exists():
        raise SegpipeError(f"ingest.source: {ingest.source} does not exist on this machine; point it at the dataset "
                           f"folder or archive (a shared path, or an http(s) URL with ingest.download: true)")
    place = link.parent.resolve() / link.name  # the link itself, not what it points at now
    if target == place or place in target.parents:
        raise SegpipeError(f"ingest.source: {ingest.source} lies inside {link}, segpipe's own link; point it at "
                           f"the dataset itself")
    temporary.symlink_to(target, target_is_directory=target.is_dir())
    os.replace(temporary, link)  # a link replaces a link (or the note) in one step; what it pointed at stays
    return str(target)

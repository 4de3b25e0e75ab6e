"""Resolve ``ingest.source`` to a local folder: a directory as is, an archive extracted safely, a URL downloaded."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from segpipe.data.imageio import sha256_file
from segpipe.errors import SegpipeError
from segpipe.fsutil import atomic_path

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DOWNLOAD_DIR = Path("data/downloads")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _member_target(root: Path, name: str, archive: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    target = (root / pure).resolve()
    if pure.is_absolute() or not target.is_relative_to(root.resolve()):
        raise SegpipeError(f"{archive}: member '{name}' would be written outside the target folder; refusing archive")
    return target


def extract_archive(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into ``target``; refuse links and members that escape ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise SegpipeError(f"{archive}: member '{info.filename}' is a symbolic link; refusing archive")
                    _member_target(target, info.filename, archive)
                zf.extractall(target)
            return
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
                    raise SegpipeError(f"{archive}: member '{member.name}' is a link or special file; refusing archive")
                _member_target(target, member.name, archive)
            tf.extractall(target, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise SegpipeError(f"{archive}: not a readable archive ({exc}); download it again") from None


def download(url: str, sha256: str | None, allowed: bool) -> Path:
    """Download ``url`` into data/downloads (once), verifying ``sha256`` when given."""
    name = PurePosixPath(urllib.request.urlparse(url).path).name or "download"
    target = DOWNLOAD_DIR / name
    if not target.exists():
        if not allowed:
            raise SegpipeError(f"ingest.source is a URL ({url}); set ingest.download: true to allow downloading it")
        try:
            with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=60) as response:
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise SegpipeError(f"download of {url} failed ({exc}); check the network or download it by hand") from None
    if sha256 and sha256_file(target) != sha256.lower():
        target.unlink()
        raise SegpipeError(f"{url}: sha256 does not match ingest.sha256; the file was removed, check the URL/hash")
    return target


@contextmanager
def local_source(source: str, sha256: str | None = None, allow_download: bool = False) -> Iterator[Path]:
    """Yield a local folder holding the source data; temporary extractions are removed afterwards."""
    path = download(source, sha256, allow_download) if is_url(source) else Path(source).expanduser()
    if not path.exists():
        raise SegpipeError(f"ingest.source: {path} does not exist; point it at a dataset folder, archive or URL")
    if path.is_dir():
        yield path
        return
    if not is_archive(path):
        raise SegpipeError(f"ingest.source: {path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
    if sha256 and not is_url(source) and sha256_file(path) != sha256.lower():
        raise SegpipeError(f"{path}: sha256 does not match ingest.sha256")
    with tempfile.TemporaryDirectory(prefix="segpipe-extract-") as tmp:
        extract_archive(path, Path(tmp))
        entries = list(Path(tmp).iterdir())
        yield entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)

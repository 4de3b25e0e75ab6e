"""Resolve ``ingest.source`` to a local folder: a directory as is, an archive extracted safely, a URL downloaded."""

from __future__ import annotations

import hashlib
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
from segpipe.params import LimitsParams

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


def _check_size(archive: Path, target: Path, members: int, size: int, limits: LimitsParams) -> None:
    """Refuse an archive past the member-count or size limit before anything is extracted (the sizes come from
    the archive's own index, which extraction holds to)."""
    if members > limits.archive_members:
        raise SegpipeError(f"{archive}: {members:,} members, more than ingest.limits.archive_members "
                           f"({limits.archive_members:,}); refusing to extract it (raise the limit if it is right)")
    room = limits.archive_bytes or shutil.disk_usage(target).free
    if size > room:
        where = "ingest.limits.archive_bytes" if limits.archive_bytes else f"the free space in {target}"
        raise SegpipeError(f"{archive}: extracts to {size:,} bytes, more than {where} ({room:,}); refusing to "
                           f"extract it (free space or raise the limit)")


def extract_archive(archive: Path, target: Path, limits: LimitsParams | None = None) -> None:
    """Extract a zip or tar archive into ``target``; refuse links, members that escape ``target``, and archives
    past ``limits`` (members, bytes)."""
    limits = limits or LimitsParams()
    target.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                _check_size(archive, target, len(infos), sum(info.file_size for info in infos), limits)
                for info in infos:
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise SegpipeError(f"{archive}: member '{info.filename}' is a symbolic link; refusing archive")
                    _member_target(target, info.filename, archive)
                zf.extractall(target)
            return
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            _check_size(archive, target, len(members), sum(member.size for member in members), limits)
            for member in members:
                if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
                    raise SegpipeError(f"{archive}: member '{member.name}' is a link or special file; refusing archive")
                _member_target(target, member.name, archive)
            tf.extractall(target, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise SegpipeError(f"{archive}: not a readable archive ({exc}); download it again") from None


def download_path(url: str) -> Path:
    """Where the download of ``url`` is kept: under a hash of the whole URL, so that two URLs ending in the same
    file name are two downloads."""
    name = PurePosixPath(urllib.request.urlparse(url).path).name or "download"
    return DOWNLOAD_DIR / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def download(url: str, sha256: str | None, allowed: bool, max_bytes: int = LimitsParams().download_bytes) -> Path:
    """Download ``url`` into data/downloads (once), verifying ``sha256`` when given; stop past ``max_bytes``."""
    target = download_path(url)
    if not target.exists():
        if not allowed:
            raise SegpipeError(f"ingest.source is a URL ({url}); set ingest.download: true to allow downloading it")
        try:
            with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=60) as response:
                announced = int(response.headers.get("Content-Length") or 0)
                if announced > max_bytes:
                    raise SegpipeError(f"{url} is {announced:,} bytes, more than ingest.limits.download_bytes "
                                       f"({max_bytes:,}); raise the limit if it is right")
                _copy_at_most(response, tmp, max_bytes, url)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise SegpipeError(f"download of {url} failed ({exc}); check the network or download it by hand") from None
    if sha256 and sha256_file(target) != sha256.lower():
        target.unlink()
        raise SegpipeError(f"{url}: sha256 does not match ingest.sha256; the file was removed, check the URL/hash")
    return target


def _copy_at_most(response, path: Path, max_bytes: int, url: str) -> None:
    written = 0
    with open(path, "wb") as out:
        for block in iter(lambda: response.read(1 << 20), b""):
            written += len(block)
            if written > max_bytes:
                raise SegpipeError(f"{url}: the download passed ingest.limits.download_bytes ({max_bytes:,}) and was "
                                   f"stopped and removed; raise the limit if the file is right")
            out.write(block)


@contextmanager
def local_source(source: str, sha256: str | None = None, allow_download: bool = False,
                 limits: LimitsParams | None = None) -> Iterator[Path]:
    """Yield a local folder holding the source data; temporary extractions are removed afterwards."""
    limits = limits or LimitsParams()
    path = download(source, sha256, allow_download, limits.download_bytes) if is_url(source) else \
        Path(source).expanduser()
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
        extract_archive(path, Path(tmp), limits)
        entries = list(Path(tmp).iterdir())
        yield entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)

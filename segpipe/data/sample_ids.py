"""Sample ids from file names that can never collide: two files never share an id, so none overwrites another in
data/raw (or in ``predict``'s output folder) and none is paired with another's mask or label file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import PurePosixPath

from segpipe.errors import SegpipeError


def unique_ids(paths: list[str], what: str = "a file") -> list[str]:
    """An id per path (POSIX, relative to one root), in order: the file's stem when no other path has that stem,
    else the path without its suffix ('/' as '__'), and the suffix too when only the suffixes differ. Paths that
    still share an id are an error naming both."""
    stems = Counter(PurePosixPath(p).stem for p in paths)
    bare = Counter(_without_suffix(p) for p in paths)
    ids = []
    for path in paths:
        pure = PurePosixPath(path)
        if stems[pure.stem] == 1:
            ids.append(pure.stem)
        elif bare[_without_suffix(path)] == 1:
            ids.append(_without_suffix(path).replace("/", "__"))
        else:
            ids.append(f"{_without_suffix(path).replace('/', '__')}_{pure.suffix.lstrip('.').lower()}")
    require_unique(zip(ids, paths, strict=True), f"the sample id of {what}", "neither may replace the other")
    return ids


def _without_suffix(path: str) -> str:
    return PurePosixPath(path).with_suffix("").as_posix()


def require_unique(keyed: Iterable[tuple[str, str]], what: str, why: str) -> None:
    """Raise naming the first two sources that share a key (a sample id, or the stem that pairs files)."""
    seen: dict[str, str] = {}
    for key, source in keyed:
        if key in seen:
            raise SegpipeError(f"{seen[key]} and {source} both give {what} '{key}'; rename one of them ({why})")
        seen[key] = source

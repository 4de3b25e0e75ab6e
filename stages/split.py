"""The split stage: split the clean manifest into train / val / test."""

from __future__ import annotations

from segpipe.data.canonical import CATEGORIES_FILE, MANIFEST_FILE, Categories, read_manifest, write_manifest
from segpipe.data.split import class_shares, coverage, split
from segpipe.fsutil import atomic_dir, write_json
from segpipe.params import Params
from segpipe.paths import CLEAN, REPORTS, SPLIT
from segpipe.stage import stage_main, warn


def run(params: Params) -> dict:
    """Write data/split/{train,val,test}.parquet and reports/split.json."""
    categories = Categories.load(CLEAN / CATEGORIES_FILE)
    parts, method = split(read_manifest(CLEAN / MANIFEST_FILE), params.split, params.base.seed)
    with atomic_dir(SPLIT) as tmp:
        for name, frame in parts.items():
            write_manifest(frame, tmp / f"{name}.parquet")
        categories.save(tmp / CATEGORIES_FILE)
    report = {
        "method": method,
        "sizes": {name: len(frame) for name, frame in parts.items()},
        "class_pixel_share": class_shares(parts, categories.names),
        **coverage(parts, categories, params.clean.warn_ignore_share),
    }
    write_json(REPORTS / "split.json", report)
    print(f"split ({method}): " + ", ".join(f"{k} {v}" for k, v in report["sizes"].items()))
    for line in report["warnings"]:
        warn("split", line)
    return report


def main() -> None:
    stage_main("split", run)


if __name__ == "__main__":
    main()

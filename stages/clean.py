"""The clean stage: validate every sample; write the clean manifest and the clean reports."""

from __future__ import annotations

from segpipe.data.canonical import CATEGORIES_FILE, MANIFEST_FILE, Categories, read_manifest, write_manifest
from segpipe.data.clean import CleanResult, clean
from segpipe.fsutil import atomic_dir, write_atomic, write_json
from segpipe.params import Params
from segpipe.paths import CLEAN, RAW, REPORTS
from segpipe.stage import stage_main, warn


def run(params: Params) -> CleanResult:
    """Clean data/raw into data/clean; reports go to reports/clean.json and reports/clean_rejects.csv."""
    categories = Categories.load(RAW / CATEGORIES_FILE)
    manifest = read_manifest(RAW / MANIFEST_FILE)
    with atomic_dir(CLEAN) as tmp:
        result = clean(manifest, categories, params.clean, tmp, params.base.workers)
        write_json(REPORTS / "clean.json", result.summary)
        write_atomic(REPORTS / "clean_rejects.csv", lambda p: result.rejects.to_csv(p, index=False))
        result.raise_if_empty()
        write_manifest(result.manifest, tmp / MANIFEST_FILE)
        categories.save(tmp / CATEGORIES_FILE)
    s = result.summary
    print(f"clean: kept {s['kept']} of {s['checked']}, dropped {s['dropped']} {s['dropped_by_reason']}, "
          f"repaired {s['repaired']} (details in {REPORTS / 'clean_rejects.csv'})")
    for line in s["warnings"]:
        warn("clean", line)
    return result


def main() -> None:
    stage_main("clean", run)


if __name__ == "__main__":
    main()

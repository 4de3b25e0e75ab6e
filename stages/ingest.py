"""The ingest stage: bring the source dataset into the canonical layout under data/raw."""

from __future__ import annotations

import pandas as pd

from segpipe.data.ingest import ingest
from segpipe.params import Params
from segpipe.paths import RAW
from segpipe.stage import stage_main


def run(params: Params) -> pd.DataFrame:
    """Ingest ``params.ingest`` into data/raw and print a one-line summary."""
    manifest = ingest(params, RAW)
    flagged = int((manifest.issue != "").sum())
    print(f"ingest: {len(manifest)} samples from {params.ingest.format} -> {RAW} ({flagged} flagged for clean)")
    return manifest


def main() -> None:
    stage_main("ingest", run)


if __name__ == "__main__":
    main()

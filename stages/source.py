"""The source stage: keep data/source (and data/source-extra) pointing at the source data, for DVC to hash."""

from __future__ import annotations

from segpipe.data.source_link import link_sources
from segpipe.params import Params
from segpipe.stage import stage_main


def run(params: Params) -> dict[str, str]:
    """Link data/source to ``ingest.source`` and data/source-extra to ``pretrain.extra_images`` (a note when
    there are no local files)."""
    linked = link_sources(params)
    print("source: " + "; ".join(f"{key} -> {target}" for key, target in linked.items()))
    return linked


def main() -> None:
    stage_main("source", run)


if __name__ == "__main__":
    main()

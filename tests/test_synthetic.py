import numpy as np

from segpipe.data.canonical import CATEGORIES_FILE, MANIFEST_FILE, Categories, read_manifest
from segpipe.data.imageio import load_image, load_label
from segpipe.data.ingest import ingest
from segpipe.data.synthetic import CATEGORIES, generate_scene
from tests.conftest import tiny_params


def test_scenes_are_deterministic_and_have_stuff_and_things():
    a = generate_scene(3, 7, (64, 80), 4)
    b = generate_scene(3, 7, (64, 80), 4)
    c = generate_scene(4, 7, (64, 80), 4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.semantic, b.semantic)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (64, 80, 3) and a.semantic.shape == (64, 80)
    things = {cat.id for cat in CATEGORIES.items if cat.isthing}
    # every instance pixel carries a thing class, and every thing pixel belongs to an instance
    assert set(np.unique(a.semantic[a.instance > 0])) <= things
    assert (a.instance[np.isin(a.semantic, list(things))] > 0).all()
    ids = np.unique(a.instance)
    assert list(ids) == list(range(len(ids)))  # contiguous after occlusion


def test_ingest_synthetic_writes_the_canonical_layout(workdir):
    params = tiny_params()
    manifest = ingest(params, workdir / "data/raw")
    assert len(manifest) == 24
    assert (manifest.issue == "").all()
    categories = Categories.load(workdir / "data/raw" / CATEGORIES_FILE)
    assert categories.names == CATEGORIES.names and categories.ignore_index == 255
    again = read_manifest(workdir / "data/raw" / MANIFEST_FILE)
    row = again.iloc[0]
    assert load_image(row.image).pixels.shape == (64, 64, 3)
    assert load_label(row.semantic).max() < 6
    assert load_label(row.instance).dtype.kind in "iu"
    # the stored manifest is relative, so the dataset folder can move
    import pandas as pd

    stored = pd.read_parquet(workdir / "data/raw" / MANIFEST_FILE)
    assert stored.image.iloc[0].startswith("images/")

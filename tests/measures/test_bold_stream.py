"""ROI-streaming BOLD read: the same float32 values as nibabel's whole-array read, at the selected voxels."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from ptsd_bidsapp.measures import MeasureError, bold_stream
from ptsd_bidsapp.measures.activation import roi_mean_signals
from ptsd_bidsapp.measures.bold_stream import read_bold_voxels, volumes_per_block
from ptsd_bidsapp.measures.voi import first_eigenvariate
from ptsd_bidsapp.simulate.images import bold_header, volumes_from_matrix, write_nifti_gz


def _labels(shape, rng):
    labels = np.zeros(shape, int)
    labels[1:4, 2:5, 1:3] = 1
    labels[4:7, 1:3, 2:6] = 2
    labels[rng.random(shape) < 0.05] = 3  # scattered voxels: the gather must follow C order exactly
    return labels


def _scaled_bold(path, shape, dtype, slope, inter, rng):
    """A random 4D NIfTI stored as ``dtype`` with scaling ``slope``/``inter`` in its header."""
    img = nib.Nifti1Image((rng.random(shape) * 200).astype(dtype), np.eye(4))
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
    return path


def _nibabel_float32(path):
    """The reference: nibabel's whole 4D array as float32 (the app's former read)."""
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def test_simulator_int16_bold_equals_nibabel_read_and_roi_means_are_identical(tmp_path):
    rng = np.random.default_rng(0)
    shape, n_t = (8, 7, 6), 30
    mask = np.ones(shape, bool)
    series = 1000 + 50 * rng.standard_normal((n_t, mask.sum()))
    path = write_nifti_gz(tmp_path / "sim_bold.nii.gz", bold_header(np.eye(4), shape, n_t, 2.0),
                          volumes_from_matrix(series, mask))
    labels = _labels(shape, rng)
    selected = labels > 0
    voxels = read_bold_voxels(path, selected)
    full = _nibabel_float32(path)
    assert voxels.dtype == np.float32 and voxels.shape == (selected.sum(), n_t)
    # exact: the same int16 values cast to float32, gathered in the order full[selected] has
    np.testing.assert_array_equal(voxels, full[selected])
    old_means, old_n = roi_mean_signals(full, labels, [1, 2, 3])
    new_means, new_n = roi_mean_signals(voxels, labels[selected], [1, 2, 3])
    np.testing.assert_array_equal(new_means, old_means)
    np.testing.assert_array_equal(new_n, old_n)
    np.testing.assert_array_equal(first_eigenvariate(voxels[labels[selected] == 3].T),
                                  first_eigenvariate(full[labels == 3].T))


@pytest.mark.parametrize("dtype,slope,inter", [(">i2", 0.5, 10.0), ("<f4", 1.0, 0.0), ("<u1", 2.0, -3.0),
                                               (">f8", 1.0, 0.0)])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_scaling_byte_order_and_uncompressed_files_match_nibabel(tmp_path, dtype, slope, inter, suffix):
    rng = np.random.default_rng(1)
    shape = (5, 6, 4, 9)
    path = _scaled_bold(tmp_path / f"bold{suffix}", shape, dtype, slope, inter, rng)
    selected = _labels(shape[:3], rng) > 0
    np.testing.assert_array_equal(read_bold_voxels(path, selected), _nibabel_float32(path)[selected])


def test_block_sizes_isal_and_zlib_give_the_same_values(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((6, 5, 4, 23)).astype(np.float32)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    selected = rng.random(data.shape[:3]) < 0.3
    reference = data[selected]
    monkeypatch.setattr(bold_stream, "BLOCK_BYTES", 5 * 6 * 5 * 4 * 4)  # 5 volumes per read: 23 = 4 x 5 + 3
    assert volumes_per_block(6 * 5 * 4 * 4, 23) == 5
    for low_mem in (False, True):
        for accelerate in (False, True):
            np.testing.assert_array_equal(read_bold_voxels(path, selected, low_mem, accelerate), reference)


def test_isal_is_the_accelerator_when_installed():
    isal = pytest.importorskip("isal.igzip")
    assert bold_stream.gzip_module(True) is isal
    assert bold_stream.gzip_module(False) is gzip


def test_low_mem_reads_one_volume_at_a_time_and_bounds_peak_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(bold_stream, "BLOCK_BYTES", 64 * 2**20)  # default mode: the whole 26 MB run in one read
    rng = np.random.default_rng(3)
    data = rng.standard_normal((64, 64, 40, 40)).astype(np.float32)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    one_run, one_volume = data.nbytes, data[..., 0].nbytes
    selected = np.zeros(data.shape[:3], bool)
    selected[5:15, 5:15, 5:15] = True
    expected = data[selected]
    del data
    assert volumes_per_block(one_volume, 40, low_mem=True) == 1
    assert volumes_per_block(one_volume, 40, low_mem=False) == 40  # 26 MB run < the 64 MB block
    peaks = {}
    for low_mem in (True, False):
        tracemalloc.start()
        voxels = read_bold_voxels(path, selected, low_mem=low_mem, accelerate=False)
        peaks[low_mem] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        np.testing.assert_array_equal(voxels, expected)
    print({k: round(v / one_run, 3) for k, v in peaks.items()})
    # low-mem: the selected voxels (raw + float32 = 2 x 0.16 MB) + one volume buffer + zlib's read buffers
    # (128 kB chunks); well under a tenth of the run. Default: the whole run is one block here.
    assert peaks[True] < 4 * expected.nbytes + 3 * one_volume + 2**20 < 0.2 * one_run
    assert peaks[False] >= one_run


def test_all_zero_truncated_and_wrong_grid_raise_naming_the_file(tmp_path):
    zero = tmp_path / "sub-01_task-faces_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 5), np.float32), np.eye(4)), zero)
    with pytest.raises(MeasureError, match="all zeros") as err:
        read_bold_voxels(zero, np.ones((4, 4, 4), bool))
    assert zero.name in str(err.value)
    # zeros on disk but an intercept: not all zeros once scaled (as nibabel reads it)
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 5), np.int16), np.eye(4))
    img.header.set_slope_inter(1.0, 100.0)
    shifted = tmp_path / "shifted_bold.nii.gz"
    nib.save(img, shifted)
    assert (read_bold_voxels(shifted, np.ones((4, 4, 4), bool)) == 100).all()

    good = tmp_path / "trunc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(4).random((8, 8, 8, 10)).astype(np.float32), np.eye(4)), good)
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])
    for low_mem in (False, True):
        with pytest.raises(MeasureError, match="trunc_bold"):
            read_bold_voxels(good, np.ones((8, 8, 8), bool), low_mem=low_mem)
    short = tmp_path / "short_bold.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 10), np.float32), np.eye(4)), short)
    short.write_bytes(short.read_bytes()[:-100])
    with pytest.raises(MeasureError, match=r"short_bold.nii is truncated: volume 10 of 10"):
        read_bold_voxels(short, np.ones((8, 8, 8), bool))
    with pytest.raises(MeasureError, match=r"grid \(4, 4, 3\) differs"):
        read_bold_voxels(zero, np.ones((4, 4, 3), bool))
    three_d = tmp_path / "three_d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), three_d)
    with pytest.raises(MeasureError, match="three_d.nii.gz is not 4D"):
        read_bold_voxels(three_d, np.ones((4, 4, 4), bool))


@pytest.mark.parametrize("dtype,slope,inter", [(">i2", 0.5, 10.0), ("<f4", 1.0, 0.0)])
def test_mean_image_equals_the_temporal_mean_of_nibabels_array(tmp_path, monkeypatch, dtype, slope, inter):
    """The report underlay from the same pass: nibabel's scaled array averaged over time (float32 rounding)."""
    rng = np.random.default_rng(3)
    shape = (5, 6, 4, 11)
    path = _scaled_bold(tmp_path / "bold.nii.gz", shape, dtype, slope, inter, rng)
    selected = _labels(shape[:3], rng) > 0
    monkeypatch.setattr(bold_stream, "BLOCK_BYTES", 3 * 5 * 6 * 4 * np.dtype(dtype).itemsize)  # 11 = 3 x 3 + 2
    reference = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64).mean(axis=3)
    for low_mem in (False, True):
        voxels, mean = read_bold_voxels(path, selected, low_mem=low_mem, mean_image=True)
        np.testing.assert_array_equal(voxels, _nibabel_float32(path)[selected])
        assert mean.shape == shape[:3] and mean.dtype == np.float32
        np.testing.assert_allclose(mean, reference, rtol=1e-6)

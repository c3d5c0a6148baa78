"""ptsd_bidsapp.measures: participant-level measures as pure functions on arrays/DataFrames.

Modules: :mod:`confounds` (nilearn load_confounds wrapper), :mod:`qc` (motion QC),
:mod:`activation` (ROI signals, ROI-level GLM), :mod:`gppi` (deconvolution + gPPI),
:mod:`restfc` (task-free FC), :mod:`voi` (eigenvariates), :mod:`features` (Contract 3 rows).
"""

from ptsd_bidsapp.measures.errors import MeasureError

__all__ = ["MeasureError"]

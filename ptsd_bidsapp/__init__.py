"""ptsd_bidsapp: PTSD fear-regulation circuit analysis of pre/post treatment trials.

A BIDS App turning fMRIPrep derivatives into ROI activation, gPPI and task-free
connectivity change scores, leave-one-out elastic-net prediction of symptom
improvement, and DCM + PEB of amygdala-vmPFC effective connectivity
(reference study: Norbury et al. 2021, Neuropsychopharmacology 46:2266).
"""

import os as _os

__version__ = "0.1.0"

# The app runs offline (README): nipype's telemetry (etelemetry, a version lookup on
# rig.mit.edu at the first interface created) is switched off before nipype is imported;
# the participant level also sets nipype's ``execution.check_version`` to false.
_os.environ.setdefault("NIPYPE_NO_ET", "1")

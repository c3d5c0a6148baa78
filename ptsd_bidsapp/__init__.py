"""ptsd_bidsapp: PTSD fear-regulation circuit analysis of pre/post treatment trials.

A BIDS App turning fMRIPrep derivatives into ROI activation, gPPI and task-free
connectivity change scores, leave-one-out elastic-net prediction of symptom
improvement, and DCM + PEB of amygdala-vmPFC effective connectivity
(reference study: Norbury et al. 2021, Neuropsychopharmacology 46:2266).
"""

__version__ = "0.1.0"

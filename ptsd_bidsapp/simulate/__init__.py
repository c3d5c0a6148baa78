"""Synthetic PTSD treatment trial (BIDS raw + fMRIPrep-like derivatives + planted ground truth).

>>> from ptsd_bidsapp.simulate import simulate_trial
>>> simulate_trial("/tmp/sim", n_subjects=4, resolution=8, n_volumes=60)  # doctest: +SKIP
"""

from ptsd_bidsapp.simulate.trial import simulate_trial

__all__ = ["simulate_trial"]

"""Public model specification of a deterministic bilinear DCM for fMRI (ARCHITECTURE Contract 5).

:class:`DCMSpec` holds what SPM12 keeps in a ``DCM`` structure before ``spm_dcm_estimate``:
connection masks ``a``, ``b``, ``c``; inputs ``U.u`` at microtime resolution with step
``U.dt``; ``TR`` (``Y.dt``); ``TE``; data ``Y.y``; confounds ``Y.X0``; slice-timing
``delays``; ``options.centre``. Arrays in, posterior out: nothing here knows about BIDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ptsd_bidsapp.dcm import integrate, priors

__all__ = ["DCMSpec", "as_parameter_dict"]


@dataclass
class DCMSpec:
    """Specification of a one-state bilinear DCM for fMRI (SPM12 ``DCM`` structure).

    Parameters
    ----------
    a : array (n, n)
        Endogenous connections, ``a[to, from]`` (1 = estimated). Self-connections are
        always estimated (SPM convention), whatever the diagonal says.
    b : array (m, n, n) or mapping {input name: (n, n)}
        Modulatory effects ``b[input, to, from]``. (SPM's ``DCM.b`` is ``(n, n, m)``; that
        layout is accepted when ``n != m``.)
    c : array (n, m)
        Driving inputs ``c[to, input]``.
    u : array (bins, m)
        Inputs on the microtime grid (SPM ``U.u``): bin ``k`` covers ``[k u_dt, (k+1) u_dt)``
        seconds from the start of the first scan. Blocks have height 1; SPM's
        ``spm_get_ons`` gives purely event-related conditions height ``1/u_dt``.
    u_dt : float
        Microtime step in seconds (SPM ``U.dt``, default TR/16).
    tr : float
        Repetition time in seconds (``Y.dt``).
    te : float
        Echo time in seconds (``DCM.TE``), enters the BOLD coefficients (Stephan et al.
        2007). Note: the SPM12 ``spm_gx_fmri`` in the ``spm/spm12`` repository ($Id 6262)
        uses a fixed TE of 0.04 s whatever ``DCM.TE`` says; pass ``te=0.04`` to reproduce
        SPM12 estimates number for number.
    y : array (scans, n), optional
        Observed BOLD (regional eigenvariates). Needed for estimation.
    x0 : array (scans, k), optional
        Confounds (``Y.X0``); a constant is used when absent (``spm_dcm_estimate``).
    region_names, input_names : list of str, optional
        Default ``R1..Rn`` / ``U1..Um``.
    delays : float or array (n,), optional
        Acquisition time of each region within the scan, seconds (``DCM.delays``). Default
        TR/2 for every region (``spm_dcm_specify``); pass the slice-timing reference
        (fMRIPrep ``StartTime``) for slice-time-corrected data.
    centre_inputs : bool
        Mean-centre the inputs (``options.centre``); default True.
    n_scans : int, optional
        Number of scans to predict when ``y`` is absent. Default
        ``floor(bins * u_dt / tr)``.
    hE, hC : float
        Hyperprior mean and variance of the log noise precision of each region
        (``options.hE = 6``, ``options.hC = 1/128``).
    noise_ar1 : float or sequence of float, optional
        Lag-1 autoregressive coefficient of each region's noise. ``None`` (default) is
        SPM's model, white noise per region (``spm_Ce``); a value ``rho`` models the noise
        of region ``i`` as AR(1), ``e_t = rho e_(t-1) + w_t``, by pre-whitening data,
        prediction and confounds with the Prais-Winsten transform (Prais & Winsten 1954;
        the noise precision is then ``W_i' W_i exp(h_i)``, and the free energy keeps the
        ``log|W|`` term). See :func:`ptsd_bidsapp.dcm.participant.fit_session_dcm` for how the
        app estimates ``rho``.
    max_iter : int
        Maximum number of VL iterations (``options.maxit``, 128).
    tolerance : float
        Convergence threshold on the predicted free-energy increase, nats: the inversion has
        converged when ``dF`` stayed below it for four consecutive iterations
        (``spm_nlsi_GN`` r7771 uses 0.1, the default).
    prior_mean, prior_variance : mapping {parameter name: float}, optional
        Overrides of single prior means / variances, by parameter name
        (:func:`ptsd_bidsapp.contracts.dcm_parameter_names`, e.g. ``"A_vmpfc-amygdala"``), as
        SPM's ``DCM.M.pE`` / ``DCM.M.pC`` edited by hand: variance 0 switches a parameter off
        (fixed at its prior mean), a smaller variance shrinks it.
    """

    a: np.ndarray
    b: object
    c: np.ndarray
    u: np.ndarray
    u_dt: float
    tr: float
    te: float
    y: np.ndarray | None = None
    x0: np.ndarray | None = None
    region_names: Sequence[str] | None = None
    input_names: Sequence[str] | None = None
    delays: object = None
    centre_inputs: bool = True
    n_scans: int | None = None
    hE: float = 6.0
    hC: float = 1.0 / 128.0
    noise_ar1: object = None
    max_iter: int = 128
    tolerance: float = 0.1
    prior_mean: Mapping | None = None
    prior_variance: Mapping | None = None
    _schedule: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.a = np.asarray(self.a, dtype=float)
        if self.a.ndim != 2 or self.a.shape[0] != self.a.shape[1]:
            raise ValueError(f"a must be square (regions x regions), got shape {self.a.shape}")
        n = self.a.shape[0]
        self.u = np.asarray(self.u, dtype=float)
        if self.u.ndim == 1:
            self.u = self.u[:, None]
        m = self.u.shape[1]
        self.c = np.asarray(self.c, dtype=float).reshape(n, m) if np.size(self.c) == n * m else None
        if self.c is None:
            raise ValueError(f"c must have shape (regions, inputs) = {(n, m)}")
        if self.region_names is None:
            self.region_names = [f"R{i + 1}" for i in range(n)]
        if self.input_names is None:
            self.input_names = [f"U{j + 1}" for j in range(m)]
        self.region_names = [str(r) for r in self.region_names]
        self.input_names = [str(i) for i in self.input_names]
        if len(self.region_names) != n or len(self.input_names) != m:
            raise ValueError(f"{len(self.region_names)} region names for {n} regions or "
                             f"{len(self.input_names)} input names for {m} inputs")
        self.b = priors._as_b_array(self.b, n, m, self.input_names)
        if self.u_dt <= 0 or self.tr <= 0:
            raise ValueError("u_dt and tr must be positive (seconds)")
        if not 0 < self.te <= 0.2:
            raise ValueError(f"te must be the echo time in seconds (e.g. 0.03), got {self.te}")
        if self.y is not None:
            self.y = np.asarray(self.y, dtype=float)
            if self.y.ndim == 1:
                self.y = self.y[:, None]
            if self.y.shape[1] != n:
                raise ValueError(f"y has {self.y.shape[1]} columns for {n} regions")
            if self.n_scans is not None and self.n_scans != self.y.shape[0]:
                raise ValueError("n_scans disagrees with the number of rows of y")
            self.n_scans = self.y.shape[0]
        if self.n_scans is None:
            self.n_scans = int(np.floor(self.u.shape[0] * self.u_dt / self.tr + 1e-9))
        if self.x0 is not None:
            self.x0 = np.asarray(self.x0, dtype=float)
            if self.x0.ndim == 1:
                self.x0 = self.x0[:, None]
            if self.x0.shape[0] != self.n_scans:
                raise ValueError(f"x0 has {self.x0.shape[0]} rows for {self.n_scans} scans")
        if int(self.max_iter) < 1 or not float(self.tolerance) > 0 or not float(self.hC) > 0:
            raise ValueError("max_iter must be >= 1, tolerance > 0 and hC > 0")
        if self.noise_ar1 is not None:
            self.noise_ar1 = np.broadcast_to(np.asarray(self.noise_ar1, dtype=float), (n,)).copy()
            if not np.all(np.abs(self.noise_ar1) < 1):
                raise ValueError(f"noise_ar1 must lie in (-1, 1) (a stationary AR(1)), got {self.noise_ar1}")
        names = priors.parameter_names(self.region_names, self.input_names)
        for label, overrides in (("prior_mean", self.prior_mean), ("prior_variance", self.prior_variance)):
            unknown = sorted(set(overrides or {}) - set(names))
            if unknown:
                raise ValueError(f"{label} names unknown DCM parameters {unknown}; parameters are {names}")
            if label == "prior_variance" and any(float(v) < 0 for v in (overrides or {}).values()):
                raise ValueError("prior_variance values must be >= 0")
        if self.delays is None:
            self.delays = np.full(n, self.tr / 2.0)
        self.delays = np.broadcast_to(np.asarray(self.delays, dtype=float), (n,)).copy()

    # ------------------------------------------------------------------ helpers
    @property
    def n_regions(self) -> int:
        return self.a.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.u.shape[1]

    @property
    def inputs(self) -> np.ndarray:
        """Inputs as integrated: mean-centred over all bins when ``centre_inputs`` (``spm_detrend``)."""
        return self.u - self.u.mean(axis=0) if self.centre_inputs else self.u

    @property
    def schedule(self) -> integrate.Schedule:
        """Integration schedule, rebuilt whenever inputs, timing or delays change."""
        delays = np.broadcast_to(np.asarray(self.delays, dtype=float), (self.n_regions,))
        key = (int(self.n_scans), float(self.u_dt), bool(self.centre_inputs), delays.tobytes(),
               np.asarray(self.u).shape, hash(np.ascontiguousarray(self.u, dtype=float).tobytes()))
        if self._schedule is None or self._schedule[0] != key:
            self._schedule = (key, integrate.make_schedule(self.inputs, self.u_dt, self.n_scans, delays))
        return self._schedule[1]

    def priors(self) -> tuple[dict, dict]:
        """``(pE, pC)`` dicts (:func:`ptsd_bidsapp.dcm.priors.dcm_fmri_priors`) with the overrides applied."""
        pE, pC = priors.dcm_fmri_priors(self.a, self.b, self.c)
        if not self.prior_mean and not self.prior_variance:
            return pE, pC
        n, m = self.n_regions, self.n_inputs
        names = self.parameter_names()
        vectors = []
        for base, overrides in ((pE, self.prior_mean), (pC, self.prior_variance)):
            vec = priors.pack_parameters(base, n, m)
            for name, value in (overrides or {}).items():
                vec[names.index(name)] = float(value)
            vectors.append(priors.unpack_parameters(vec, n, m))
        return vectors[0], vectors[1]

    def parameter_names(self) -> list[str]:
        return priors.parameter_names(self.region_names, self.input_names)

    def predict(self, params, return_states: bool = False):
        """Noise-free BOLD ``(scans, regions)`` for one parameter set (dict or vector)."""
        vec = parameter_vector(self, params)
        batch = _batch_dict(vec[None, :], self.n_regions, self.n_inputs)
        out = integrate.integrate(batch, self.schedule, self.te, return_states=return_states)
        if return_states:
            return out[0][0], out[1][0]
        return out[0]


def parameter_vector(spec: DCMSpec, params) -> np.ndarray:
    """Parameter dict (or vector) -> vector in :mod:`ptsd_bidsapp.dcm.priors` order."""
    if isinstance(params, Mapping):
        return priors.pack_parameters(params, spec.n_regions, spec.n_inputs, spec.input_names)
    vec = np.asarray(params, dtype=float).ravel()
    expected = priors.n_parameters(spec.n_regions, spec.n_inputs)
    if vec.size != expected:
        raise ValueError(f"parameter vector has {vec.size} entries, expected {expected}")
    return vec


def as_parameter_dict(spec: DCMSpec, params) -> dict:
    """Parameter dict with ``B`` as ``(m, n, n)`` from a dict (``B`` by name allowed) or vector."""
    return priors.unpack_parameters(parameter_vector(spec, params), spec.n_regions, spec.n_inputs)


def _batch_dict(vectors: np.ndarray, n: int, m: int) -> dict:
    """Stack of parameter vectors ``(b, p)`` -> dict of batched arrays for the integrator."""
    vectors = np.atleast_2d(vectors)
    bsz = vectors.shape[0]
    i = 0
    # column-major segments (spm_vec): reshape C-order then swap to [.., to, from]
    A = vectors[:, i:i + n * n].reshape(bsz, n, n).swapaxes(1, 2)
    i += n * n
    B = vectors[:, i:i + m * n * n].reshape(bsz, m, n, n).swapaxes(2, 3)
    i += m * n * n
    C = vectors[:, i:i + n * m].reshape(bsz, m, n).swapaxes(1, 2)
    i += n * m
    transit = vectors[:, i:i + n]
    i += n
    decay = vectors[:, i:i + 1]          # one shared decay (r7771), broadcast over regions
    epsilon = vectors[:, i + 1]
    return {"A": A, "B": B, "C": C, "transit": transit, "decay": decay, "epsilon": epsilon}

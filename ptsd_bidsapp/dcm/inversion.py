"""Variational Laplace inversion of a deterministic DCM for fMRI.

Mirrors SPM12 ``spm_dcm_estimate`` (data preparation, priors, hyperpriors, outputs) and
``spm_nlsi_GN`` (the Gauss-Newton / Levenberg-Marquardt ascent on the free energy) for the
deterministic, bilinear, one-state case. Reference: Friston, Mattout, Trujillo-Barreto,
Ashburner & Penny 2007, "Variational free energy and the Laplace approximation",
NeuroImage 34:220 (below: FMTAP07); Friston, Harrison & Penny 2003 (FHP03), sec. 3.

Model (FHP03 eq. 9): ``vec(Y) = g(theta) + (I_n kron X0) beta + e``, ``e ~ N(0, S(h))`` with
one log precision ``h_i`` per region, ``S(h)^-1 = sum_i Q_i (exp(h_i) + exp(-32))``
(``Q_i`` selects region ``i``; ``spm_Ce``). Priors ``theta ~ N(pE, pC)``
(:mod:`~ptsd_bidsapp.dcm.priors`), ``beta ~ N(0, 1e8)``, ``h ~ N(hE = 6, hC = 1/128)``.

Each iteration (FMTAP07 sec. 3, "E-step" / "M-step"):

1. predict ``g(theta)`` and its Jacobian by forward finite differences (step
   ``exp(-8)``, ``spm_diff``) in the subspace of parameters with non-zero prior variance;
2. up to 8 Fisher-scoring steps on ``h`` (FMTAP07 eq. 16-18; step ``spm_dx`` with
   regularisation ``{4}``, clipped to [-1, 1], stop when the predicted increase < 1e-2);
3. free energy (FMTAP07 eq. 12 under the Laplace approximation; ``spm_nlsi_GN``)::

       F = 1/2 ln|iS| - 1/2 e' iS e - ny/2 ln 2pi              (accuracy)
         + 1/2 ln|ipC Cp| - 1/2 p' ipC p                       (parameter complexity)
         + 1/2 ln|ihC Ch| - 1/2 d' ihC d                       (hyperparameter complexity)

   with ``p`` the deviation of the parameters (and confound betas) from the prior mean;
4. accept the step if F increased (always in the first two iterations) and relax the
   Levenberg-Marquardt regularisation (``v <- min(v + 1/2, 4)``); otherwise return to the
   last accepted point and tighten it (``v <- min(v - 2, -4)``);
5. Gauss-Newton step ``dp = (expm(t H) - I) H^-1 g`` (``spm_dx``; ``t = exp(v - ln|H|/np)``,
   the local-linearisation form of a regularised Newton step, Ozaki 1992);
6. converged when the predicted increase ``g' dp`` has been < 0.1 (``tolerance``) for four
   consecutive iterations (``spm_nlsi_GN`` criterion); otherwise stop after ``max_iter``
   iterations with ``converged = False``.

Revision followed: SPM12 r7771 ``spm_nlsi_GN`` ($Id 7279) and ``spm_dcm_estimate`` ($Id 7479);
the loop matches line by line. One numerical difference remains: the Jacobian of the
state equation at rest is analytic here (:func:`~ptsd_bidsapp.dcm.model.jacobian_at_rest`)
where SPM takes forward differences (step exp(-8)) — about 4e-4 relative difference in the
predicted BOLD, far below posterior uncertainty.
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import expm
from scipy.special import ndtr

from ptsd_bidsapp.dcm import integrate, priors
from ptsd_bidsapp.dcm.api import DCMSpec, _batch_dict

__all__ = ["DCMResult", "estimate_dcm", "DCMConvergenceError", "spm_dx"]

#: finite-difference step of ``spm_diff``
FD_STEP = np.exp(-8.0)
#: prior variance of confound coefficients (``spm_nlsi_GN``: ``uC = speye/1e-8``)
CONFOUND_PRIOR_VARIANCE = 1e8


class DCMConvergenceError(RuntimeError):
    """The integration diverged and could not be recovered (``spm_nlsi_GN``: 'Convergence failure')."""


def _spm_inv(matrix: np.ndarray) -> np.ndarray:
    # spm_inv: inverse after adding a tiny ridge, max(eps(||A||_inf) * n, exp(-32))
    n = matrix.shape[0]
    tol = max(np.spacing(np.abs(matrix).sum(axis=1).max()) * n, np.exp(-32))
    return np.linalg.inv(matrix + tol * np.eye(n))


def _spm_logdet(matrix: np.ndarray) -> float:
    # spm_logdet: log of the product of the singular values in (1e-16, 1e16); a negative
    # diagonal matrix therefore has "log-determinant" 0 (it keeps only positive entries)
    keep = np.flatnonzero(np.diag(matrix))
    m = matrix[np.ix_(keep, keep)]
    if m.size == 0:
        return 0.0
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0:
        s = np.diag(m)
    else:
        s = np.linalg.svd(m, compute_uv=False)
    s = s[(s > 1e-16) & (s < 1e16)]
    return float(np.sum(np.log(s)))


def spm_dx(dfdx: np.ndarray, f: np.ndarray, log_t: float) -> np.ndarray:
    """Regularised Newton step ``(expm(t J) - I) J^-1 f`` with ``t = exp(log_t - ln|J|/n)``.

    SPM12 ``spm_dx`` with a cell-array (relative) integration time, computed from the
    augmented matrix ``[[0, 0], [t f, t J]]`` (local linearisation, Ozaki 1992). As
    ``t -> inf`` it is the Gauss-Newton step ``-J^-1 f``; small ``t`` gives a short
    gradient step (Levenberg-Marquardt-like).
    """
    f = np.asarray(f, dtype=float).ravel()
    n = f.size
    t = np.exp(log_t - _spm_logdet(dfdx) / n)
    if t > np.exp(16):
        return -np.linalg.pinv(dfdx) @ f
    aug = np.zeros((n + 1, n + 1))
    aug[1:, 0] = t * f
    aug[1:, 1:] = t * dfdx
    return np.real(expm(aug)[1:, 0])


@dataclass
class DCMResult:
    """Posterior of a DCM (SPM12 ``DCM`` after ``spm_dcm_estimate``).

    Attributes
    ----------
    Ep : dict
        Posterior means (``A``, ``B`` (m, n, n), ``C``, ``transit``, ``decay``, ``epsilon``).
    Cp : array (p, p)
        Posterior covariance of the full parameter vector (order of ``param_names``;
        zero rows/columns for parameters fixed by the priors).
    Vp, pp : dict
        Posterior variances and probabilities (same layout as ``Ep``). ``pp`` is SPM's
        ``Pp = 1 - Phi(pE; |Ep|, Vp)``: the posterior probability that the parameter's
        magnitude exceeds its prior mean (0 for all but present extrinsic connections,
        whose prior mean is 1/128); 0 for fixed parameters.
    Ep_vector, Pp_vector, pE, pC : arrays
        Vector forms (``pC`` is the prior covariance matrix).
    param_names : list of str
    F : float
        Free energy (negative variational free energy, a lower bound on ln p(y|m)).
    F_terms : array (3,)
        Accuracy, parameter complexity and hyperparameter complexity terms of ``F``.
    Eh, Ce : arrays (n,)
        Posterior log noise precisions and noise variances ``exp(-Eh)`` per region.
    y : array (scans, n)
        Data as modelled: mean-centred and scaled (``scale``) as ``spm_dcm_estimate``.
    y_pred, residuals : arrays (scans, n)
        Predicted BOLD (without confounds) and residuals with confounds removed (SPM
        ``DCM.y``, ``DCM.R``), in the units of ``y``.
    scale : float
        Factor applied to the data (``4 / max(range, 4)``).
    beta : array (k, n)
        Posterior means of the confound coefficients.
    n_iter : int
    converged : bool
    history : list of dict
        One entry per iteration: ``iteration``, ``F`` (candidate), ``accepted``,
        ``log_ascent_rate`` (``v``), ``dF_predicted``, ``h``, ``seconds``.
    explained_variance : float
        Percent variance explained by the prediction (``spm_dcm_fmri_check``).
    seconds : float
        Wall-clock estimation time.
    """

    Ep: dict
    Cp: np.ndarray
    Vp: dict
    pp: dict
    Ep_vector: np.ndarray
    Pp_vector: np.ndarray
    pE: np.ndarray
    pC: np.ndarray
    param_names: list
    F: float
    F_terms: np.ndarray
    Eh: np.ndarray
    Ce: np.ndarray
    y: np.ndarray
    y_pred: np.ndarray
    residuals: np.ndarray
    scale: float
    beta: np.ndarray
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)
    explained_variance: float = float("nan")
    seconds: float = float("nan")
    spec: DCMSpec | None = field(default=None, repr=False)

    @property
    def region_names(self):
        return list(self.spec.region_names) if self.spec is not None else None

    @property
    def input_names(self):
        return list(self.spec.input_names) if self.spec is not None else None


def _prepare_data(spec: DCMSpec):
    """``spm_dcm_estimate`` data preparation: mean-centre, scale to a 4% range, confounds."""
    if spec.y is None:
        raise ValueError("estimate_dcm needs data: DCMSpec.y is None")
    y = np.asarray(spec.y, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.shape != (spec.n_scans, spec.n_regions):
        raise ValueError(f"y has shape {y.shape}; the model expects (scans, regions) = "
                         f"{(spec.n_scans, spec.n_regions)}")
    y = y - y.mean(axis=0)                               # spm_detrend (order 0)
    scale = 4.0 / max(float(y.max() - y.min()), 4.0)     # enforce a maximum range of 4 %
    y = y * scale
    x0 = spec.x0 if spec.x0 is not None and spec.x0.shape[1] else np.ones((spec.n_scans, 1))
    return y, scale, x0


def _whitener(rho: np.ndarray | None, n_scans: int):
    """Prais-Winsten transform of vectors stacked region by region (``spm_vec`` order).

    Returns ``(whiten, log_det)``: ``whiten(x)`` maps ``x`` (``(n_regions * n_scans,)`` or
    ``(n_regions * n_scans, k)``) to ``W x`` with ``W = blockdiag(W_i)``, ``(W_i x)_0 =
    sqrt(1 - rho_i^2) x_0`` and ``(W_i x)_t = x_t - rho_i x_(t-1)``, so that AR(1) noise with
    coefficient ``rho_i`` becomes white; ``log_det = log|W|``. Identity when ``rho`` is None.
    """
    if rho is None:
        return (lambda x: x), 0.0
    rho = np.asarray(rho, dtype=float)
    head = np.sqrt(1.0 - rho ** 2)

    def whiten(x):
        shape = x.shape
        z = x.reshape((rho.size, n_scans) + shape[1:])
        out = np.empty_like(z)
        r = rho.reshape((-1,) + (1,) * (z.ndim - 1))
        out[:, 0] = head.reshape((-1,) + (1,) * (z.ndim - 2)) * z[:, 0]
        out[:, 1:] = z[:, 1:] - r * z[:, :-1]
        return out.reshape(shape)

    return whiten, float(np.sum(np.log(head)))


def _single_thread_blas():
    # the inversion is many small matrix products: multi-threaded BLAS only adds contention
    # (measured 10-40x slower on a shared 2-core machine)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def estimate_dcm(spec: DCMSpec, P0=None, verbose: bool = False) -> DCMResult:
    """Estimate a deterministic bilinear DCM by Variational Laplace (SPM12 ``spm_dcm_estimate``).

    Parameters
    ----------
    spec : DCMSpec
        Model with data ``y``. Options used: ``hE``, ``hC``, ``max_iter``, ``tolerance``,
        ``prior_mean``, ``prior_variance``, ``centre_inputs``, ``delays``, ``x0``.
    P0 : dict or array, optional
        Starting parameters (SPM ``options.P``); default the prior mean.
    verbose : bool
        Print one line per iteration (as ``spm_nlsi_GN``).

    Returns
    -------
    DCMResult

    Raises
    ------
    DCMConvergenceError
        If the integration diverges and four increasingly regularised steps back from
        the last accepted point do not recover (as ``spm_nlsi_GN``).
    """
    with _single_thread_blas():
        return _estimate(spec, P0, verbose)


def _estimate(spec: DCMSpec, P0, verbose: bool) -> DCMResult:
    t_start = time.perf_counter()
    n, m, v = spec.n_regions, spec.n_inputs, spec.n_scans
    if not np.any(spec.c) or not np.any(spec.inputs):
        # spm_dcm_estimate switches to a stochastic DCM here; only the deterministic one exists
        raise ValueError("a deterministic DCM needs at least one driving input (non-zero c and u)")
    if n > 8:
        # spm_dcm_estimate (options.maxnodes = 8) projects the prior on A onto the principal
        # modes of the data for larger models; not implemented
        warnings.warn(f"{n} regions: SPM12 would constrain the A prior to 8 principal modes "
                      "(options.maxnodes); this implementation uses the full prior", stacklevel=3)
    y, scale, x0 = _prepare_data(spec)
    pE_d, pC_d = spec.priors()
    pE = priors.pack_parameters(pE_d, n, m)
    pC_var = priors.pack_parameters(pC_d, n, m)
    free = np.flatnonzero(pC_var > 0)                   # spm_svd(pC): the prior's support
    n_free = free.size
    schedule = spec.schedule

    ny = v * n
    whiten, log_det_w = _whitener(spec.noise_ar1, v)     # identity for SPM's white noise
    y_raw = y.ravel(order="F")                           # spm_vec: region by region
    y_vec = whiten(y_raw)
    region_of = np.repeat(np.arange(n), v)
    k0 = x0.shape[1]
    dfdu = np.kron(np.eye(n), x0)                        # confounds per region
    n_conf = dfdu.shape[1]
    ip = np.arange(n_free)
    iu = n_free + np.arange(n_conf)
    ipC = np.diag(np.concatenate([1.0 / pC_var[free], np.full(n_conf, 1.0 / CONFOUND_PRIOR_VARIANCE)]))
    ipC_diag = np.diag(ipC).copy()

    hE = np.full(n, float(spec.hE))
    ihC = np.eye(n) / float(spec.hC)

    theta0 = pE if P0 is None else priors.pack_parameters(P0, n, m, spec.input_names) \
        if isinstance(P0, dict) else np.asarray(P0, dtype=float).ravel()
    p = np.concatenate([(theta0 - pE)[free], np.linalg.pinv(dfdu) @ y_raw])
    dfdu = whiten(dfdu)
    h = hE.copy()

    def theta_of(pvec):
        theta = pE.copy()
        theta[free] += pvec[ip]
        return theta

    def predict_with_jacobian(theta):
        batch = np.repeat(theta[None, :], n_free + 1, axis=0)
        batch[1 + np.arange(n_free), free] += FD_STEP
        with np.errstate(over="ignore", invalid="ignore"):
            out = integrate.integrate(_batch_dict(batch, n, m), schedule, spec.te)  # (b, v, n)
        out = out.transpose(0, 2, 1).reshape(n_free + 1, ny)
        out = whiten(out.T).T                            # pre-whitened (no-op for white noise)
        f = out[0]
        dfdp = ((out[1:] - f) / FD_STEP).T               # (ny, n_free)
        bad = (not np.all(np.isfinite(dfdp))) or np.abs(dfdp).sum(axis=1).max() > np.exp(32)
        return f, dfdp, bad

    criterion = [False] * 4
    best = {"F": -np.inf}
    log_rate = -4.0                                      # v: log ascent rate
    dFdp = dFdpp = None
    history = []
    converged = False
    k = 0
    for k in range(1, int(spec.max_iter) + 1):
        t_iter = time.perf_counter()
        f, dfdp, revert = predict_with_jacobian(theta_of(p))
        if revert and k > 1:
            for _ in range(4):                          # back off towards the last accepted point
                log_rate = min(log_rate - 2.0, -4.0)
                p = best["p"] + spm_dx(dFdpp, dFdp, log_rate)
                f, dfdp, revert = predict_with_jacobian(theta_of(p))
                if not revert:
                    break
        if revert:
            raise DCMConvergenceError("DCM integration diverged (spm_nlsi_GN: convergence failure)")

        e = y_vec - f - dfdu @ p[iu]
        J = -np.hstack([dfdp, dfdu])

        # M-step: Fisher scoring on the log precisions (FMTAP07 eq. 16-18)
        for _ in range(8):
            prec = np.exp(h) + np.exp(-32)
            iS_diag = prec[region_of]
            Pp = J.T @ (iS_diag[:, None] * J)
            Cp = _spm_inv(Pp + ipC)
            dFdh = np.empty(n)
            dFdhh = np.zeros((n, n))
            for i in range(n):
                rows = region_of == i
                w = np.exp(h[i])
                Ji = J[rows]
                trace_PS = v * w / prec[i]                # tr(P_i S)
                dFdh[i] = trace_PS / 2 - w * (e[rows] @ e[rows]) / 2 - w * np.sum(Cp * (Ji.T @ Ji)) / 2
                dFdhh[i, i] = -v * (w / prec[i]) ** 2 / 2
            d = h - hE
            dFdh = dFdh - ihC @ d
            dFdhh = dFdhh - ihC
            Ch = _spm_inv(-dFdhh)
            dh = np.clip(spm_dx(dFdhh, dFdh, 4.0), -1.0, 1.0)
            h = h + dh
            if dFdh @ dh < 1e-2:
                break

        # free energy at the current expansion point (spm_nlsi_GN L(1..3))
        # (with pre-whitening, iS = W' diag(iS_diag) W: ln|iS| gains 2 ln|W|)
        L1 = np.sum(np.log(iS_diag)) / 2 + log_det_w - e @ (iS_diag * e) / 2 - ny * np.log(2 * np.pi) / 2
        L2 = _spm_logdet(ipC @ Cp) / 2 - p @ (ipC_diag * p) / 2
        L3 = _spm_logdet(ihC @ Ch) / 2 - d @ ihC @ d / 2
        F = L1 + L2 + L3

        accepted = bool(F > best["F"] or k < 3)
        if accepted:
            best = {"p": p.copy(), "h": h.copy(), "F": F, "L": np.array([L1, L2, L3]), "Cp": Cp}
            dFdp = -J.T @ (iS_diag * e) - ipC_diag * p
            dFdpp = -J.T @ (iS_diag[:, None] * J) - ipC
            log_rate = min(log_rate + 0.5, 4.0)
        else:
            p = best["p"].copy()
            h = best["h"].copy()
            log_rate = min(log_rate - 2.0, -4.0)

        dp = spm_dx(dFdpp, dFdp, log_rate)
        p = p + dp
        dF = float(dFdp @ dp)
        history.append({"iteration": k, "F": float(F), "accepted": accepted, "log_ascent_rate": log_rate,
                        "dF_predicted": dF, "h": h.tolist(), "seconds": time.perf_counter() - t_iter})
        if verbose:
            print(f"EM:({'+' if accepted else '-'}) {k:3d}  F: {best['F']:.3e}  dF predicted: {dF:.3e}")
        criterion = [dF < float(spec.tolerance)] + criterion[:-1]
        if all(criterion):
            converged = True
            break

    # outputs (spm_nlsi_GN / spm_dcm_estimate)
    p_best = best["p"]
    Ep_vec = theta_of(p_best)
    Cp_full = np.zeros((pE.size, pE.size))
    Cp_full[np.ix_(free, free)] = best["Cp"][np.ix_(ip, ip)]
    Cp_full = (Cp_full + Cp_full.T) / 2
    Eh = best["h"]
    y_pred = spec.predict(Ep_vec)
    R = y - y_pred
    R = R - x0 @ np.linalg.solve(x0.T @ x0 + 0 * np.eye(k0), x0.T @ R)
    Vp_vec = np.diag(Cp_full).copy()
    sd = np.sqrt(np.maximum(Vp_vec, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        Pp_vec = np.where(sd > 0, 1.0 - ndtr((pE - np.abs(Ep_vec)) / np.where(sd > 0, sd, 1.0)), 0.0)
    pss, rss = float(np.sum(y_pred ** 2)), float(np.sum(R ** 2))
    return DCMResult(
        Ep=priors.unpack_parameters(Ep_vec, n, m),
        Cp=Cp_full,
        Vp=priors.unpack_parameters(Vp_vec, n, m),
        pp=priors.unpack_parameters(Pp_vec, n, m),
        Ep_vector=Ep_vec,
        Pp_vector=Pp_vec,
        pE=pE,
        pC=np.diag(pC_var),
        param_names=spec.parameter_names(),
        F=float(best["F"]),
        F_terms=best["L"],
        Eh=Eh,
        Ce=np.exp(-Eh),
        y=y,
        y_pred=y_pred,
        residuals=R,
        scale=scale,
        beta=p_best[iu].reshape(n, k0).T,
        n_iter=k,
        converged=converged,
        history=history,
        explained_variance=100.0 * pss / (pss + rss) if pss + rss > 0 else float("nan"),
        seconds=time.perf_counter() - t_start,
        spec=spec,
    )

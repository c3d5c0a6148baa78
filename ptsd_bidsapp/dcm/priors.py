"""Priors of the deterministic one-state bilinear DCM for fMRI.

Mirrors SPM12 ``spm_dcm_fmri_priors`` (one hidden neuronal state per region, no
nonlinear ``D`` terms). Prior means/variances (Friston, Harrison & Penny 2003, sec. 3;
Stephan et al. 2007, NeuroImage 38:387, table 1 for the haemodynamic parameters, as
re-parameterised by SPM12 into log scale factors):

==============  ========================  =========================================
field           prior mean                prior variance
==============  ========================  =========================================
``A`` off-diag  1/128 where ``a`` = 1     1/64 where ``a`` = 1, else 0 (fixed)
``A`` diagonal  0 (log self-inhibition)   1/64 always (self-connections always free)
``A`` (n = 1)   ``a`` - 1 (0 or -1)       ``a`` (1 or 0): SPM's vector branch, see below
``B``           0                         1 where ``b`` = 1, else 0
``C``           0                         1 where ``c`` = 1, else 0
``transit``     0 (log scale of 2 s)      1/256, one per region
``decay``       0 (log scale of 0.64/s)   1/256, ONE shared by all regions (r7771)
``epsilon``     0 (log scale of 1)        1/256
==============  ========================  =========================================

One region: MATLAB's ``isvector`` is true for the 1x1 ``A``, and ``spm_dcm_fmri_priors`` then
treats ``A`` as a vector of switches: ``pE.A = (a - 1)``, ``pC.A = a`` (``a`` as 0/1). A one-region
model with ``a = 1`` has a free self-connection of prior variance 1 (not 1/64); with ``a = 0`` the
self-connection is fixed at log scale -1.

Revision followed: SPM12 r7771 ``spm_dcm_fmri_priors`` ($Id 7497), which has one ``decay``
for all regions; the 2016 revision ($Id 6759) that earlier versions of this package
followed had one per region.

Vectorised parameter order: owned by :mod:`ptsd_bidsapp.contracts` (SPM ``spm_vec`` of
``pE``; the order of every vector and covariance this package writes): ``A`` column-major
(index ``to + n*from``), then ``B`` input by input, each column-major, then ``C``
column-major (``to + n*input``), then ``transit`` (n), ``decay`` (1), ``epsilon`` (1);
``n^2 (1 + m) + n m + n + 2`` parameters for ``n`` regions and ``m`` inputs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ptsd_bidsapp import contracts

__all__ = [
    "CONNECTION_PRECISION",
    "HEMODYNAMIC_VARIANCE",
    "dcm_fmri_priors",
    "parameter_names",
    "pack_parameters",
    "unpack_parameters",
    "n_parameters",
]

#: Prior precision of (log self-) connections in ``A`` (SPM ``pA = 64`` one-state default).
CONNECTION_PRECISION = 64.0
#: Prior mean of present extrinsic connections (SPM: ``pE.A = A/128``).
EXTRINSIC_PRIOR_MEAN = 1.0 / 128.0
#: Prior variance of the log-scaled haemodynamic parameters (SPM: ``1/256``).
HEMODYNAMIC_VARIANCE = 1.0 / 256.0


def n_parameters(n_regions: int, n_inputs: int) -> int:
    """Length of the DCM parameter vector (:func:`ptsd_bidsapp.contracts.dcm_n_parameters`)."""
    return contracts.dcm_n_parameters(n_regions, n_inputs)


def _as_b_array(b, n: int, m: int, input_names: Sequence[str] | None = None) -> np.ndarray:
    """``B`` as an array ``(m, n, n)`` indexed ``[input, to, from]``.

    Accepts a mapping ``{input name: (n, n)}`` (missing inputs are zero), or an array of
    shape ``(m, n, n)``. An SPM-style ``(n, n, m)`` array is accepted only when it cannot
    be confused with ``(m, n, n)`` (i.e. ``n != m``).
    """
    if b is None:
        return np.zeros((m, n, n))
    if isinstance(b, Mapping):
        if input_names is None:
            raise ValueError("B given by input name needs input_names")
        unknown = set(b) - set(input_names)
        if unknown:
            raise ValueError(f"B names unknown inputs {sorted(unknown)}; inputs are {list(input_names)}")
        out = np.zeros((m, n, n))
        for k, name in enumerate(input_names):
            if name in b and b[name] is not None:
                out[k] = np.asarray(b[name], dtype=float).reshape(n, n)
        return out
    arr = np.asarray(b, dtype=float)
    if arr.size == 0:
        return np.zeros((m, n, n))
    if arr.ndim == 2 and m == 1:
        arr = arr[None]
    if arr.shape == (m, n, n):
        return arr
    if arr.shape == (n, n, m):
        return np.moveaxis(arr, 2, 0)
    raise ValueError(f"B must have shape (inputs, to, from) = {(m, n, n)}, got {arr.shape}")


def dcm_fmri_priors(a, b, c, input_names: Sequence[str] | None = None) -> tuple[dict, dict]:
    """Prior means and variances of a one-state bilinear DCM (SPM12 ``spm_dcm_fmri_priors``).

    Parameters
    ----------
    a : array (n, n)
        Endogenous connection mask, ``a[to, from]`` (1 = present). The diagonal is ignored:
        self-connections are always estimated -- except for one region, where ``a`` switches
        the self-connection (SPM's vector branch, see the module docstring).
    b : array (m, n, n) or mapping {input name: (n, n)}
        Modulatory mask ``b[input, to, from]``.
    c : array (n, m)
        Driving-input mask ``c[to, input]``.
    input_names : sequence of str, optional
        Needed when ``b`` is a mapping.

    Returns
    -------
    pE, pC : dict
        Fields ``A`` (n, n), ``B`` (m, n, n), ``C`` (n, m), ``transit`` (n,), ``decay`` (float,
        shared by all regions), ``epsilon`` (float). ``pC`` holds prior *variances* (the prior covariance is
        diagonal, ``np.diag(pack_parameters(pC))``).
    """
    a = np.asarray(a, dtype=float)
    n = a.shape[0]
    c = np.asarray(c, dtype=float).reshape(n, -1)
    m = c.shape[1]
    b = _as_b_array(b, n, m, input_names)
    off = (a != 0) & ~np.eye(n, dtype=bool)
    pE = {
        "A": off / 128.0,  # spm_dcm_fmri_priors: pE.A = A/128 (A without its diagonal)
        "B": np.zeros((m, n, n)),
        "C": np.zeros((n, m)),
        "transit": np.zeros(n),
        "decay": 0.0,
        "epsilon": 0.0,
    }
    pC = {
        "A": (off + np.eye(n)) / CONNECTION_PRECISION,  # pC.A = A/pA + eye/pA
        "B": (b != 0).astype(float),
        "C": (c != 0).astype(float),
        "transit": np.full(n, HEMODYNAMIC_VARIANCE),
        "decay": HEMODYNAMIC_VARIANCE,
        "epsilon": HEMODYNAMIC_VARIANCE,
    }
    if n == 1:
        # one region: MATLAB's isvector() is true for a 1x1 A, so spm_dcm_fmri_priors (r7771,
        # $Id 7497) takes its vector branch: mean logical(a) - 1 (options.decay = 1), variance
        # logical(a) -- a free log self-inhibition of prior variance 1, or one fixed at -1
        present = float(a[0, 0] != 0)
        pE["A"] = np.array([[present - 1.0]])
        pC["A"] = np.array([[present]])
    return pE, pC


def pack_parameters(params: Mapping, n: int | None = None, m: int | None = None,
                    input_names: Sequence[str] | None = None) -> np.ndarray:
    """Vectorise a parameter dict in SPM ``spm_vec`` order (see module docstring).

    ``B`` may be an ``(m, n, n)`` array or a mapping by input name (needs ``input_names``).
    Missing ``B``/``C``/haemodynamic fields are taken as zero.
    """
    A = np.asarray(params["A"], dtype=float)
    n = A.shape[0] if n is None else n
    if m is None:
        if input_names is not None:
            m = len(input_names)
        elif params.get("C") is not None:
            m = np.asarray(params["C"]).reshape(n, -1).shape[1]
        else:
            m = 0
    B = _as_b_array(params.get("B"), n, m, input_names)
    C = np.zeros((n, m)) if params.get("C") is None else np.asarray(params["C"], dtype=float).reshape(n, m)
    transit = np.broadcast_to(np.asarray(params.get("transit", 0.0), dtype=float), (n,))
    decay = _scalar(params.get("decay", 0.0), "decay")
    epsilon = _scalar(params.get("epsilon", 0.0), "epsilon")
    parts = [A.ravel(order="F")]
    parts += [B[k].ravel(order="F") for k in range(m)]
    parts += [C.ravel(order="F"), transit, [decay], [epsilon]]
    return np.concatenate([np.asarray(p, dtype=float).ravel() for p in parts])


def _scalar(value, name: str) -> float:
    arr = np.asarray(value, dtype=float).ravel()
    if arr.size != 1:
        raise ValueError(f"DCM parameter {name!r} is one value shared by all regions (SPM12 r7771), "
                         f"got {arr.size} values")
    return float(arr[0])


def unpack_parameters(vector: np.ndarray, n: int, m: int) -> dict:
    """Inverse of :func:`pack_parameters`: dict with ``A``, ``B`` (m, n, n), ``C``, ``transit``, ``decay``, ``epsilon``."""
    v = np.asarray(vector, dtype=float).ravel()
    if v.size != n_parameters(n, m):
        raise ValueError(f"expected {n_parameters(n, m)} parameters for {n} regions and {m} inputs, got {v.size}")
    i = 0
    A = v[i:i + n * n].reshape(n, n, order="F"); i += n * n
    B = np.stack([v[i + k * n * n:i + (k + 1) * n * n].reshape(n, n, order="F") for k in range(m)]) \
        if m else np.zeros((0, n, n))
    i += m * n * n
    C = v[i:i + n * m].reshape(n, m, order="F"); i += n * m
    transit = v[i:i + n].copy(); i += n
    return {"A": A.copy(), "B": B.copy(), "C": C.copy(), "transit": transit, "decay": float(v[i]),
            "epsilon": float(v[i + 1])}


def parameter_names(region_names: Sequence[str], input_names: Sequence[str]) -> list[str]:
    """Names of the parameter vector (:func:`ptsd_bidsapp.contracts.dcm_parameter_names`)."""
    return contracts.dcm_parameter_names(region_names, input_names)

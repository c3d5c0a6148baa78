"""Participant-level DCM: one DCM per session from the VOIs and the task events.

Pure functions (no nipype, no file I/O): :func:`fit_session_dcm` builds the SPM-style
inputs from a BIDS events table and the ``dcm:`` section of the analysis config and
estimates the DCM; :func:`dcm_result_to_json` turns the posterior into the derivative's
JSON content (named parameters for people, vectors/matrices for PEB);
:func:`dcm_measures` gives the Contract 2 feature values.

Vector order of every array written (``param_names``; SPM ``spm_vec`` of ``DCM.Ep``):
``A`` column-major (``A_<from>-<to>`` with "to" varying fastest), ``B`` per input in
the order of ``dcm.inputs`` (``B_<input>_<from>-<to>``, same layout), ``C``
(``C_<input>_<to>``, regions fastest), ``transit_<region>``, ``decay_<region>``,
``epsilon``. Parameters switched off by the masks are included with prior and posterior
mean 0 and zero (prior and posterior) variance, as in SPM. This is the order
:func:`ptsd_bidsapp.group.dcm_group.dcm_parameter_names` reads.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ptsd_bidsapp import contracts
from ptsd_bidsapp.dcm import priors
from ptsd_bidsapp.dcm.api import DCMSpec
from ptsd_bidsapp.dcm.inversion import DCMResult, estimate_dcm

__all__ = [
    "MICROTIME_BINS",
    "build_inputs",
    "session_spec",
    "fit_session_dcm",
    "dcm_result_to_json",
    "dcm_measures",
    "dcm_measure_ids",
    "plot_dcm_fit",
]

#: microtime bins per TR (SPM ``defaults.stats.fmri.t = 16``)
MICROTIME_BINS = 16
#: echo time (s) that SPM12 r7771 ``spm_gx_fmri`` ($Id 6262) uses whatever ``DCM.TE`` says
SPM12_TE = 0.04
#: bound on the estimated AR(1) coefficient (keeps the whitening well conditioned)
AR1_LIMIT = 0.9


def build_inputs(events: pd.DataFrame, input_conditions: Mapping[str, Sequence[str]], n_scans: int,
                 tr: float, bins_per_tr: int = MICROTIME_BINS) -> tuple[np.ndarray, float]:
    """Stimulus functions on the microtime grid, as SPM12 ``spm_get_ons`` builds ``U.u``.

    Each input pools the events of its conditions (``trial_type``). An event with onset
    ``o`` and duration ``d`` (seconds from the first scan) covers bins
    ``round(o/dt) .. round(o/dt) + round(d/dt)`` inclusive (``spm_get_ons``: the offset
    bin is ``ton + round(dur/dt) + 1``, exclusive). Overlapping events add. An input whose
    events all have zero duration is scaled by ``1/dt`` so that ``sum(u dt)`` is the
    number of events (``spm_get_ons`` "event-related" scaling); blocks have height 1.

    Returns
    -------
    u : array (n_scans * bins_per_tr, n_inputs)
    dt : float
        Microtime step (s).
    """
    dt = tr / bins_per_tr
    n_bins = int(n_scans) * bins_per_tr
    missing = {"onset", "duration", "trial_type"} - set(events.columns)
    if missing:
        raise ValueError(f"events table lacks column(s) {sorted(missing)}")
    u = np.zeros((n_bins, len(input_conditions)))
    for j, (name, conditions) in enumerate(input_conditions.items()):
        rows = events[events["trial_type"].astype(str).isin([str(c) for c in conditions])]
        onsets = pd.to_numeric(rows["onset"], errors="coerce").to_numpy(dtype=float)
        durations = pd.to_numeric(rows["duration"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
        keep = np.isfinite(onsets)
        onsets, durations = onsets[keep], durations[keep]
        height = 1.0 / dt if onsets.size and not np.any(durations) else 1.0
        edges = np.zeros(n_bins + 1)
        start = np.floor(onsets / dt + 0.5).astype(int)           # MATLAB round (onsets >= 0)
        stop = start + np.floor(np.maximum(durations, 0) / dt + 0.5).astype(int) + 1
        start = np.clip(start, 0, n_bins)
        stop = np.clip(stop, 0, n_bins)
        np.add.at(edges, start, height)
        np.add.at(edges, stop, -height)
        u[:, j] = np.cumsum(edges)[:n_bins]
    return u, dt


def _matrix(value, shape, what) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"dcm.{what} must have shape {shape}, got {arr.shape}")
    return arr


def _model_matrices(dcm_config: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``a`` (n, n), ``b`` (m, n, n), ``c`` (n, m) and the input names of the ``dcm:`` config section."""
    n = len(dcm_config["regions"])
    inputs = dict(dcm_config.get("inputs") or {})
    if not inputs:
        raise ValueError("dcm.inputs defines no input")
    input_names = list(inputs)
    m = len(input_names)
    a = _matrix(dcm_config["a"], (n, n), "a")
    b = np.zeros((m, n, n))
    for name, mat in (dcm_config.get("b") or {}).items():
        if name not in inputs:
            raise ValueError(f"dcm.b.{name}: not an input under dcm.inputs {input_names}")
        b[input_names.index(name)] = _matrix(mat, (n, n), f"b.{name}")
    c = np.zeros((n, m))
    for name, vec in (dcm_config.get("c") or {}).items():
        if name not in inputs:
            raise ValueError(f"dcm.c.{name}: not an input under dcm.inputs {input_names}")
        c[:, input_names.index(name)] = _matrix(vec, (n,), f"c.{name}")
    return a, b, c, input_names


def dcm_measure_ids(task: str, dcm_config: Mapping) -> list[str]:
    """The Contract 2 ids :func:`dcm_measures` gives for the configured model, without data.

    The free ``A``, ``B`` and ``C`` parameters (prior variance > 0 after the config's
    ``priors`` overrides), in parameter-vector order: the rows that are ``n/a`` when a
    session's DCM cannot be fitted. Built from the same :meth:`DCMSpec.priors` as a fit.
    """
    a, b, c, input_names = _model_matrices(dcm_config)
    overrides = dcm_config.get("priors") or {}
    # one microtime bin of zero input: the spec is only asked for its priors
    spec = DCMSpec(a=a, b=b, c=c, u=np.zeros((1, len(input_names))), u_dt=1.0, tr=1.0, te=SPM12_TE,
                   region_names=[str(r) for r in dcm_config["regions"]], input_names=input_names,
                   prior_mean={k: v["mean"] for k, v in overrides.items() if v.get("mean") is not None},
                   prior_variance={k: v["variance"] for k, v in overrides.items() if v.get("variance") is not None})
    _, pC = spec.priors()
    variances = priors.pack_parameters(pC, spec.n_regions, spec.n_inputs)
    return [contracts.dcm_measure_id(task, name) for name, var in zip(spec.parameter_names(), variances)
            if name[0] in "ABC" and var > 0]


def session_spec(voi: pd.DataFrame, events: pd.DataFrame, tr: float, dcm_config: Mapping,
                 confounds: np.ndarray | None = None, slice_timing_ref: float | None = None,
                 echo_time: float | None = None) -> DCMSpec:
    """The :class:`DCMSpec` of one session (see :func:`fit_session_dcm` for the arguments)."""
    regions = [str(r) for r in dcm_config["regions"]]
    absent = [r for r in regions if r not in voi.columns]
    if absent:
        raise ValueError(f"VOI table lacks region column(s) {absent} (has {list(voi.columns)})")
    y = voi[regions].to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        bad = [r for r in regions if not np.all(np.isfinite(voi[r].to_numpy(dtype=float)))]
        raise ValueError(f"VOI time series of {bad} contain n/a values: no DCM")
    n_scans = y.shape[0]
    inputs = dict(dcm_config.get("inputs") or {})
    a, b, c, input_names = _model_matrices(dcm_config)
    u, dt = build_inputs(events, inputs, n_scans, tr, int(dcm_config.get("microtime_bins", MICROTIME_BINS)))
    if slice_timing_ref is None:
        delays = tr / 2.0                      # spm_dcm_specify default: middle of the volume
    else:
        delays = float(slice_timing_ref)
        if not 0.0 <= delays <= tr:
            raise ValueError(f"slice_timing_ref must be seconds within the TR [0, {tr}], got {delays}")
    x0 = None
    if confounds is not None:
        conf = np.asarray(confounds, dtype=float)
        conf = conf[:, None] if conf.ndim == 1 else conf
        if conf.shape[0] != n_scans:
            raise ValueError(f"confounds have {conf.shape[0]} rows for {n_scans} scans")
        conf = np.nan_to_num(conf - np.nanmean(conf, axis=0))
        conf = conf[:, np.abs(conf).max(axis=0) > 0] if conf.size else conf
        x0 = np.hstack([np.ones((n_scans, 1)), conf])
        # an orthonormal basis of the same column space (scaled so the constant stays 1): the
        # confound coefficients have a flat prior, so the model is unchanged, but raw motion /
        # CompCor columns left the Gauss-Newton ascent ill-conditioned (demo trial: 26 of 42
        # session DCMs at the 128-iteration cap; orthonormal: converged in ~20 iterations)
        q, r = np.linalg.qr(x0)
        rank = np.abs(np.diag(r)) > 1e-10 * np.abs(np.diag(r)).max()
        x0 = q[:, rank] * np.sqrt(n_scans)
        x0 = x0 * np.sign(x0[0, 0])
    te = dcm_config.get("te", SPM12_TE)
    if te == "sidecar":
        if echo_time is None:
            raise ValueError("dcm.te is 'sidecar' but the BOLD sidecar has no EchoTime")
        te = echo_time
    overrides = dcm_config.get("priors") or {}
    return DCMSpec(a=a, b=b, c=c, u=u, u_dt=dt, tr=float(tr), te=float(te), y=y, x0=x0,
                   region_names=regions, input_names=input_names, delays=delays,
                   centre_inputs=bool(dcm_config.get("centre_inputs", True)),
                   max_iter=int(dcm_config.get("max_iterations", 128)),
                   tolerance=float(dcm_config.get("tolerance", 0.1)),
                   hE=float(dcm_config.get("hE", 6.0)), hC=float(dcm_config.get("hC", 1.0 / 128.0)),
                   prior_mean={k: v["mean"] for k, v in overrides.items() if v.get("mean") is not None},
                   prior_variance={k: v["variance"] for k, v in overrides.items() if v.get("variance") is not None})


def fit_session_dcm(voi: pd.DataFrame, events: pd.DataFrame, tr: float, dcm_config: Mapping,
                    confounds: np.ndarray | None = None, slice_timing_ref: float | None = None,
                    echo_time: float | None = None) -> DCMResult:
    """Estimate the DCM of one session (SPM12 ``spm_dcm_specify`` + ``spm_dcm_estimate``).

    Parameters
    ----------
    voi : DataFrame (scans x regions)
        Regional first eigenvariates; columns named by ROI label (Contract 1).
    events : DataFrame
        BIDS events: ``onset``, ``duration`` (seconds from the first scan), ``trial_type``.
    tr : float
        Repetition time (s).
    dcm_config : mapping
        The ``dcm:`` section of the analysis config: ``regions`` (order of the model),
        ``a`` (``a[to][from]``), ``b`` ({input: n x n}), ``c`` ({input: n}), ``inputs``
        ({input: [conditions]}, the order of the inputs), ``te`` (s; default 0.04 as SPM12's
        ``spm_gx_fmri``, or ``"sidecar"`` for ``echo_time``), ``centre_inputs``,
        ``max_iterations``, ``tolerance`` (nats), ``hE``, ``hC`` (noise hyperpriors),
        ``noise`` (``"white"``: SPM's model; ``"ar1"``: AR(1) noise per region, see below),
        ``microtime_bins`` (16), ``priors`` ({parameter name: {mean, variance}} overrides).
    confounds : array (scans, k), optional
        Confound regressors (``Y.X0``); mean-centred and joined to a constant.
    slice_timing_ref : float, optional
        Acquisition time (s) within the TR that the data represent (fMRIPrep
        ``StartTime`` after slice-timing correction); the sampling delay of every
        region. Default TR/2 (``spm_dcm_specify``).
    echo_time : float, optional
        ``EchoTime`` of the BOLD sidecar (s), used when ``dcm_config["te"] == "sidecar"``.

    Returns
    -------
    DCMResult
        ``result.spec`` holds the model (``result.spec.noise_ar1``: the AR(1) coefficients
        used, None for white noise); see :func:`dcm_result_to_json`.

    Notes
    -----
    ``noise: ar1`` (two passes, as SPM's GLM estimates its AR model from the residuals of a
    first fit): the model is first inverted with SPM's white noise; each region's lag-1
    autocorrelation of the residuals (after the confounds) is the AR(1) coefficient ``rho``
    (clipped to ``[-AR1_LIMIT, AR1_LIMIT]``), and the model is inverted again, started from the
    first posterior, with pre-whitened data (:class:`~ptsd_bidsapp.dcm.api.DCMSpec`
    ``noise_ar1``). On real fMRI the residuals of the white-noise fit are serially correlated
    (lag-1 r 0.3-0.75 on the nitime/fMRIPrep null trials) and the white model's posteriors
    are several times too confident (docs: ARCHITECTURE "DCM noise model").
    """
    spec = session_spec(voi, events, tr, dcm_config, confounds, slice_timing_ref, echo_time)
    noise = str(dcm_config.get("noise", "white"))
    if noise not in contracts.DCM_NOISE_MODELS:
        raise ValueError(f"dcm.noise must be one of {contracts.DCM_NOISE_MODELS}, got {noise!r}")
    white = estimate_dcm(spec)
    if noise == "white":
        return white
    spec.noise_ar1 = residual_ar1(white.residuals)
    return estimate_dcm(spec, P0=white.Ep_vector)


def residual_ar1(residuals: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each column of ``residuals`` (scans x regions), clipped.

    ``r_i = sum_t e_t e_(t-1) / sum_t e_t^2`` (the Yule-Walker AR(1) estimate), limited to
    ``[-AR1_LIMIT, AR1_LIMIT]``; 0 for a column without variance.
    """
    e = np.asarray(residuals, dtype=float)
    e = e[:, None] if e.ndim == 1 else e
    e = e - e.mean(axis=0)
    denom = np.sum(e ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(denom > 0, np.sum(e[1:] * e[:-1], axis=0) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(r, -AR1_LIMIT, AR1_LIMIT)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def dcm_result_to_json(result: DCMResult, subject: str | None = None, session: str | None = None,
                       task: str | None = None, include_timeseries: bool = True) -> dict:
    """JSON-serialisable content of the participant DCM derivative.

    Keys: ``subject``, ``session``, ``task``, ``region_names``, ``input_names``, masks
    ``a``/``b``/``c``, timing (``tr``, ``te``, ``delays``, ``microtime_dt``,
    ``centre_inputs``, ``n_scans``), ``F`` and its terms, ``converged``, ``n_iter``,
    ``explained_variance`` (%), ``scale``, ``Eh``/``Ce`` (noise log precision/variance per
    region), ``parameters`` (``{name: {mean, variance, probability, prior_mean,
    prior_variance, free}}``), ``posterior`` (field-wise means: ``A`` [to][from], ``B``
    {input: [to][from]}, ``C`` [to][input], ``transit``, ``decay``, ``epsilon``), and the
    PEB arrays ``param_names``, ``Ep`` (vector), ``Cp`` (matrix), ``pE`` (vector), ``pC``
    (matrix), ``Pp`` (vector) in the order of the module docstring. With
    ``include_timeseries``: ``timeseries`` {``observed``, ``predicted``, ``residuals``}
    (scans x regions, in the units of the modelled data, i.e. after mean-centring and the
    ``scale`` factor) and the iteration ``history``.
    """
    spec = result.spec
    names = list(result.param_names)
    prior_var = np.diag(result.pC)
    post_var = np.diag(result.Cp)
    parameters = {
        name: {"mean": result.Ep_vector[i], "variance": post_var[i], "probability": result.Pp_vector[i],
               "prior_mean": result.pE[i], "prior_variance": prior_var[i], "free": bool(prior_var[i] > 0)}
        for i, name in enumerate(names)
    }
    posterior = {
        "A": result.Ep["A"],
        "B": {inp: result.Ep["B"][k] for k, inp in enumerate(spec.input_names)},
        "C": result.Ep["C"],
        "transit": result.Ep["transit"],
        "decay": result.Ep["decay"],
        "epsilon": result.Ep["epsilon"],
    }
    out = {
        "model": "deterministic bilinear one-state DCM for fMRI",
        "conventions": "SPM12 r7771 spm_dcm_estimate (spm_dcm_fmri_priors, spm_fx_fmri, spm_gx_fmri, spm_int, "
                       "spm_nlsi_GN); A[to][from] in Hz, diagonal = log scale of -0.5 Hz self-inhibition",
        "subject": subject,
        "session": session,
        "task": task,
        "region_names": list(spec.region_names),
        "input_names": list(spec.input_names),
        "a": spec.a,
        "b": {inp: spec.b[k] for k, inp in enumerate(spec.input_names)},
        "c": spec.c,
        "tr": spec.tr,
        "te": spec.te,
        "delays": spec.delays,
        "microtime_dt": spec.u_dt,
        "centre_inputs": spec.centre_inputs,
        "n_scans": spec.n_scans,
        "hE": spec.hE,
        "hC": spec.hC,
        "noise": "white" if spec.noise_ar1 is None else "ar1",
        "noise_ar1": None if spec.noise_ar1 is None else [float(r) for r in spec.noise_ar1],
        "F": result.F,
        "F_terms": {"accuracy": result.F_terms[0], "parameter_complexity": result.F_terms[1],
                    "hyperparameter_complexity": result.F_terms[2]},
        "converged": result.converged,
        "n_iter": result.n_iter,
        "explained_variance": result.explained_variance,
        "scale": result.scale,
        "Eh": result.Eh,
        "Ce": result.Ce,
        "parameters": parameters,
        "posterior": posterior,
        "param_names": names,
        "Ep": result.Ep_vector,
        "Cp": result.Cp,
        "pE": result.pE,
        "pC": result.pC,
        "Pp": result.Pp_vector,
    }
    if include_timeseries:
        out["timeseries"] = {"observed": result.y, "predicted": result.y_pred, "residuals": result.residuals}
        out["history"] = result.history
    return _jsonable(out)


def dcm_measures(result: DCMResult, task: str) -> dict[str, float]:
    """Contract 2 feature values: ``dcm_<task>_<param name>`` -> posterior mean, free A/B/C only.

    E.g. ``dcm_faces_B_fearful_amygdala-vmpfc``, ``dcm_faces_A_vmpfc-amygdala``,
    ``dcm_faces_C_faces_amygdala``.
    """
    prior_var = np.diag(result.pC)
    return {contracts.dcm_measure_id(task, name): float(result.Ep_vector[i])
            for i, name in enumerate(result.param_names) if name[0] in "ABC" and prior_var[i] > 0}


def plot_dcm_fit(result: DCMResult, ax=None):
    """Observed (dotted) and predicted (solid) BOLD per region, for the subject report.

    Returns the matplotlib figure.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    spec = result.spec
    n = spec.n_regions
    if ax is None:
        fig = Figure(figsize=(8, 1.8 * n))
        axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    t = np.arange(spec.n_scans) * spec.tr
    observed = result.y_pred + result.residuals
    for i, axis in enumerate(axes[:n]):
        axis.plot(t, observed[:, i], ":", color="0.4", lw=1, label="observed (confounds removed)")
        axis.plot(t, result.y_pred[:, i], "-", color="C3", lw=1.2, label="predicted")
        axis.set_ylabel(f"{spec.region_names[i]}\n(% scaled)")
    axes[0].legend(loc="upper right", fontsize="small", frameon=False)
    axes[min(n, len(axes)) - 1].set_xlabel("time (s)")
    axes[0].set_title(f"DCM fit: F = {result.F:.1f}, {result.explained_variance:.0f}% variance explained")
    fig.tight_layout()
    return fig

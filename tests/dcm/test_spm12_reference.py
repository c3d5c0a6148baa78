"""DCM and PEB against reference outputs of the real SPM12 (release r7771, run under GNU Octave).

The references in ``tests/data/spm12/`` were made by ``scripts/spm12_reference/``
(``make_dcm_reference.m``, ``make_peb_reference.m``; see its README). Each DCM case keeps
SPM's inputs (``U.u`` at microtime, ``Y.y``, ``X0``, masks, TR, TE, delays, options) so the
same model is rebuilt here and estimated with :func:`ptsd_bidsapp.dcm.estimate_dcm`; the PEB
case keeps every subject's first-level posterior (``Ep``, full ``Cp``, ``F``) as estimated by
SPM so that our PEB runs on exactly the same input as ``spm_dcm_peb``.

Tolerances (agreed acceptance): free A, B, C posterior means within 0.05 of SPM, free energy
within 1 nat; PEB and BMA expectations within 0.05, the same effects at Pp > 0.95.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from ptsd_bidsapp.dcm import DCMSpec, estimate_dcm
from ptsd_bidsapp.dcm import priors as dcm_priors
from tests.spm12_data import peb_first_level

DATA = Path(__file__).resolve().parents[1] / "data" / "spm12"
#: block2ar1: AR(1) noise with SPM's precision components Y.Q{i} = W_i'W_i (the app's noise_ar1)
DCM_CASES = ["block2", "event3", "selfmod2", "block2ar1"]
EP_TOL = 0.05      # posterior means (A, B, C; PEB and BMA effects)
F_TOL = 1.0        # nats
# What the DCM inversion actually achieves (measured: every Ep within 8e-10, Eh and F equal to
# the printed digits): the acceptance bounds above are 10^7 wider and let a wrong noise model
# pass (dropping tr(Cp·J'J) from dF/dh moves Eh by 0.01-0.04, Ep by 0.002-0.006, F by 0.04-11
# nats). These regression bounds keep a margin of 10^3 over the measured agreement.
EP_REGRESSION_TOL = 1e-6
EH_REGRESSION_TOL = 1e-4
F_REGRESSION_TOL = 1e-3
PP_THRESHOLD = 0.95


# --------------------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=None)
def _load(name: str) -> dict:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"SPM12 reference {path.name} not present")
    return json.loads(path.read_text())


def _input_names(inputs: dict) -> list[str]:
    names = inputs["U_name"]
    return [names] if isinstance(names, str) else list(names)


def _spec_from_reference(ref: dict) -> DCMSpec:
    """The DCM that SPM estimated, rebuilt as a DCMSpec (SPM layouts converted explicitly)."""
    inp = ref["inputs"]
    n = int(inp["n"])
    names = _input_names(inp)
    m = len(names)
    u = np.asarray(inp["U_u"], dtype=float).reshape(-1, m)
    b_spm = np.asarray(inp["b"], dtype=float).reshape(n, n, m)        # b(to, from, input)
    return DCMSpec(
        a=np.asarray(inp["a"], dtype=float).reshape(n, n),
        b=np.moveaxis(b_spm, 2, 0),                                   # -> b[input, to, from]
        c=np.asarray(inp["c"], dtype=float).reshape(n, m),
        u=u,
        u_dt=float(inp["U_dt"]),
        tr=float(inp["TR"]),
        te=float(inp["TE"]),
        y=np.asarray(inp["Y_y"], dtype=float).reshape(-1, n),
        x0=np.asarray(inp["X0"], dtype=float).reshape(int(inp["v"]), -1),
        region_names=list(inp["region_names"]),
        input_names=names,
        delays=np.asarray(inp["delays"], dtype=float).reshape(n),
        centre_inputs=bool(inp["options"]["centre"]),
        hE=float(inp["options"]["hE"]),
        hC=float(inp["options"]["hC"]),
        max_iter=int(inp["options"]["maxit"]),
        noise_ar1=(np.asarray(inp["noise_ar1"], dtype=float).reshape(n)
                   if np.any(inp.get("noise_ar1", 0)) else None),
    )


@functools.lru_cache(maxsize=None)
def _estimate(case: str):
    ref = _load(f"dcm_{case}.json")
    return ref, estimate_dcm(_spec_from_reference(ref))


def _free_connections(ref: dict) -> np.ndarray:
    """Indices (spm_vec order) of the A, B, C parameters SPM estimated (non-zero prior variance)."""
    out = ref["outputs"]
    names = out["param_names"]
    pc = np.asarray(out["pC_diag"], dtype=float)
    return np.array([i for i, name in enumerate(names) if name[0] in "ABC" and pc[i] > 0])


def _table(names, ours, spm) -> str:
    return "\n".join(f"  {nm:12s} ours {a:+.4f}  SPM {s:+.4f}  diff {a - s:+.4f}"
                     for nm, a, s in zip(names, ours, spm))


# --------------------------------------------------------------------------------- r7771 facts
def test_r7771_parameter_count_two_regions_one_driving_one_modulatory_input():
    # spm_dcm_fmri_priors r7771: one decay shared by all regions -> n^2(1+m) + nm + n + 2
    assert dcm_priors.n_parameters(2, 2) == 20
    ref = _load("dcm_block2.json")
    assert len(ref["outputs"]["Ep"]) == 20 == len(ref["outputs"]["param_names"])
    spec = _spec_from_reference(ref)
    assert len(spec.parameter_names()) == 20
    pE, _ = spec.priors()
    assert np.ndim(pE["decay"]) == 0 or np.size(pE["decay"]) == 1


@pytest.mark.parametrize("case", DCM_CASES)
def test_priors_equal_spm_dcm_fmri_priors(case):
    """Prior means and variances, element by element in spm_vec order (spm_dcm_fmri_priors)."""
    ref = _load(f"dcm_{case}.json")
    spec = _spec_from_reference(ref)
    n, m = spec.n_regions, spec.n_inputs
    pE, pC = spec.priors()
    ours_E = dcm_priors.pack_parameters(pE, n, m)
    ours_C = dcm_priors.pack_parameters(pC, n, m)
    assert ours_E.size == len(ref["outputs"]["pE"]), (ours_E.size, len(ref["outputs"]["pE"]))
    np.testing.assert_allclose(ours_E, ref["outputs"]["pE"], atol=1e-12)
    np.testing.assert_allclose(ours_C, ref["outputs"]["pC_diag"], atol=1e-12)


# --------------------------------------------------------------------------------- DCM cases
@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_connectivity_matches_spm(case):
    ref, result = _estimate(case)
    spm_ep = np.asarray(ref["outputs"]["Ep"], dtype=float)
    assert result.Ep_vector.size == spm_ep.size, \
        f"{result.Ep_vector.size} parameters, SPM12 r7771 has {spm_ep.size}"
    idx = _free_connections(ref)
    names = [ref["outputs"]["param_names"][i] for i in idx]
    diff = result.Ep_vector[idx] - spm_ep[idx]
    assert np.abs(result.Ep_vector - spm_ep).max() <= EP_REGRESSION_TOL, np.abs(result.Ep_vector - spm_ep).max()
    assert np.abs(diff).max() <= EP_TOL, (
        f"{case}: max |Ep - Ep_SPM| = {np.abs(diff).max():.4f} over free A, B, C\n"
        + _table(names, result.Ep_vector[idx], spm_ep[idx]))


@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_free_energy_matches_spm(case):
    ref, result = _estimate(case)
    spm_f = float(ref["outputs"]["F"])
    assert abs(result.F - spm_f) <= F_REGRESSION_TOL, result.F - spm_f
    assert abs(result.F - spm_f) <= F_TOL, \
        f"{case}: F ours {result.F:.4f}, SPM {spm_f:.4f}, diff {result.F - spm_f:+.4f} nats"


@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_noise_precision_and_prediction_match_spm(case):
    """Eh within 1e-4 (log precision; measured: equal to the stored digits) and the predicted
    BOLD within 2% of its range."""
    ref, result = _estimate(case)
    out = ref["outputs"]
    n = result.spec.n_regions
    np.testing.assert_allclose(result.Eh, np.asarray(out["Eh"], dtype=float).reshape(n), atol=EH_REGRESSION_TOL)
    assert result.scale == pytest.approx(float(out["scale"]), rel=1e-9)
    y_spm = np.asarray(out["y"], dtype=float).reshape(-1, n)
    span = np.ptp(y_spm, axis=0)
    assert np.all(np.abs(result.y_pred - y_spm).max(axis=0) <= 0.02 * span), \
        np.abs(result.y_pred - y_spm).max(axis=0) / span


#: What the inversion achieves against SPM12 for the second-order outputs (measured over the four
#: cases: Cp within 1.8e-11 of entries up to 0.056, Pp within 9.8e-10, Ce within 1.1e-10, R and
#: y_pred within 9.1e-10, Eh within 8.4e-9, F within 1.9e-6 nats, the same iteration count):
#: bounds with a margin of 10-100 over that (round-off differences between Octave's and numpy's
#: linear algebra, amplified over 17-31 iterations).
CP_REGRESSION_TOL = 1e-9
PP_REGRESSION_TOL = 1e-8
CE_REGRESSION_TOL = 1e-9
R_REGRESSION_TOL = 1e-8
F_TIGHT_TOL = 1e-4


@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_posterior_covariance_matches_spm(case):
    """The full posterior covariance Cp (every entry, fixed parameters' rows zero as SPM's)."""
    ref, result = _estimate(case)
    out = ref["outputs"]
    p = len(out["Ep"])
    cp_spm = np.asarray(out["Cp"], dtype=float).reshape(p, p)
    assert result.Cp.shape == (p, p)
    assert np.abs(result.Cp - cp_spm).max() <= CP_REGRESSION_TOL, np.abs(result.Cp - cp_spm).max()
    np.testing.assert_allclose(np.diag(result.Cp), np.asarray(out["Cp_diag"], dtype=float), rtol=0,
                               atol=CP_REGRESSION_TOL)
    np.testing.assert_array_equal(result.Cp, result.Cp.T)
    # the prior covariance handed back is SPM's diag(pC)
    np.testing.assert_array_equal(np.diag(result.pC), out["pC_diag"])
    np.testing.assert_array_equal(result.pE, out["pE"])


@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_posterior_probabilities_match_spm(case):
    """SPM's Pp = 1 - Phi(pE; |Ep|, Vp) for every free parameter; SPM writes NaN (null in the JSON)
    for parameters without prior variance (0/0), where this package reports 0."""
    ref, result = _estimate(case)
    pp_spm = np.array([np.nan if x is None else float(x) for x in ref["outputs"]["Pp"]])
    free = np.asarray(ref["outputs"]["pC_diag"], dtype=float) > 0
    assert np.array_equal(~np.isnan(pp_spm), free)
    assert np.abs(result.Pp_vector[free] - pp_spm[free]).max() <= PP_REGRESSION_TOL
    assert np.all(result.Pp_vector[~free] == 0)
    # the dict form is the same vector unpacked
    np.testing.assert_array_equal(dcm_priors.pack_parameters(result.pp, result.spec.n_regions,
                                                             result.spec.n_inputs), result.Pp_vector)


@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_noise_residuals_and_iterations_match_spm(case):
    """Ce = exp(-Eh), the residuals R with the confounds removed (SPM DCM.R), the predicted
    response DCM.y, F to 1e-4 nats and the number of spm_nlsi_GN iterations."""
    ref, result = _estimate(case)
    out = ref["outputs"]
    n = result.spec.n_regions
    np.testing.assert_allclose(result.Ce, np.asarray(out["Ce"], dtype=float).reshape(n), rtol=0,
                               atol=CE_REGRESSION_TOL)
    np.testing.assert_allclose(result.Ce, np.exp(-result.Eh), rtol=1e-15)
    r_spm = np.asarray(out["R"], dtype=float).reshape(-1, n)
    assert np.abs(result.residuals - r_spm).max() <= R_REGRESSION_TOL, np.abs(result.residuals - r_spm).max()
    y_spm = np.asarray(out["y"], dtype=float).reshape(-1, n)
    assert np.abs(result.y_pred - y_spm).max() <= R_REGRESSION_TOL, np.abs(result.y_pred - y_spm).max()
    assert abs(result.F - float(out["F"])) <= F_TIGHT_TOL, result.F - float(out["F"])
    assert result.n_iter == int(out["n_iter"])
    assert result.converged is bool(out["converged"]) is True
    assert len(result.history) == result.n_iter


# ------------------------------------------------------------------ SPM's finite differences
#: spm_diff's step
_SPM_DX = np.exp(-8.0)


def _spm_bireduce_finite_differences(original):
    """``jacobian_at_rest`` with the derivatives taken as SPM12 ``spm_bireduce`` takes them.

    ``spm_bireduce`` differentiates ``spm_fx_fmri`` at rest by forward differences with
    step exp(-8) (``spm_diff``): ``dfdx`` (nonlinear haemodynamics: error O(exp(-8))) and
    ``dfdxu`` (the derivative of ``dfdx`` in each input: the self-connection term
    ``-exp(A_ii + u B_ii)/2`` is nonlinear in ``u``). The package takes them analytically.
    """
    from ptsd_bidsapp.dcm import model

    def jacobian(A, B, C, transit, decay):
        J0, J1, c = original(A, B, C, transit, decay)
        A = np.asarray(A, dtype=float)
        B = np.asarray(B, dtype=float)
        n = A.shape[-1]
        m = B.shape[-3]
        batch = A.shape[:-2]
        J0 = np.array(J0, copy=True)
        J1 = np.array(J1, copy=True)
        transit = np.broadcast_to(np.asarray(transit, dtype=float), batch + (n,))
        decay = np.broadcast_to(np.asarray(decay, dtype=float).reshape(batch + (-1,)), batch + (1,))
        x0 = np.zeros((n, 5))
        for idx in np.ndindex(*batch):
            P = {"A": A[idx], "B": B[idx], "C": np.asarray(C, dtype=float)[idx], "transit": transit[idx],
                 "decay": decay[idx], "epsilon": 0.0}
            f0 = model.fx(x0, np.zeros(m), P).ravel(order="F")
            for k in range(5 * n):
                x = np.zeros(5 * n)
                x[k] = _SPM_DX
                J0[idx][:, k] = (model.fx(x.reshape(n, 5, order="F"), np.zeros(m), P).ravel(order="F") - f0) / _SPM_DX
        # dfdxu, neuronal block: diagonal -(exp(a + dx b) - exp(a)) / (2 dx); off-diagonal B exactly
        r = np.arange(n)
        a = A[..., r, r][..., None, :]                  # (..., 1, n)
        b = B[..., r, r]                                # (..., m, n)
        J1[..., r, r] = -(np.exp(a + _SPM_DX * b) - np.exp(a)) / (2.0 * _SPM_DX)
        return J0, J1, c

    return jacobian


@pytest.mark.parametrize("case", DCM_CASES)
def test_dcm_reproduces_spm_exactly_with_spm_finite_difference_jacobian(case, monkeypatch):
    """Diagnostic: with spm_bireduce's finite-difference derivatives swapped in, the inversion
    must reproduce spm_dcm_estimate to numerical precision (every free parameter within 1e-4,
    F within 0.01 nats), i.e. any remaining difference is the analytic Jacobian alone."""
    from ptsd_bidsapp.dcm import model

    if not hasattr(model, "jacobian_at_rest"):
        pytest.skip("ptsd_bidsapp.dcm.model.jacobian_at_rest not found")
    monkeypatch.setattr(model, "jacobian_at_rest", _spm_bireduce_finite_differences(model.jacobian_at_rest))
    ref = _load(f"dcm_{case}.json")
    spec = _spec_from_reference(ref)
    spm_ep = np.asarray(ref["outputs"]["Ep"], dtype=float)
    n = spec.n_regions
    y_spm = np.asarray(ref["outputs"]["y"], dtype=float).reshape(-1, n)
    assert np.abs(spec.predict(spm_ep) - y_spm).max() < 1e-8       # spm_int, number for number
    result = estimate_dcm(spec)
    free = np.asarray(ref["outputs"]["pC_diag"], dtype=float) > 0
    err = np.abs(result.Ep_vector - spm_ep)[free]
    assert err.max() < 1e-4, err.max()
    assert abs(result.F - float(ref["outputs"]["F"])) < 0.01, result.F - float(ref["outputs"]["F"])


# --------------------------------------------------------------------------------- PEB
def _peb_api():
    """fit_peb / bmr_search / select_parameters of ptsd_bidsapp.peb."""
    from ptsd_bidsapp.peb import bmr_search, fit_peb, select_parameters

    return fit_peb, bmr_search, select_parameters


def _peb_inputs(ref):
    Ep, Cp, pE, pC, X, select, F = peb_first_level(ref)
    names = dcm_priors.parameter_names(["R1", "R2"], ["task", "mod"])
    return Ep, Cp, pE, pC, X, select, names, F


@functools.lru_cache(maxsize=None)
def _fit_peb_like_spm():
    ref = _load("peb_2region.json")
    fit_peb, bmr_search, _ = _peb_api()
    Ep, Cp, pE, pC, X, select, names, F = _peb_inputs(ref)
    s = ref["settings"]
    peb = fit_peb(Ep, Cp, pE, pC, X, names, list(ref["design"]["Xnames"]), select=select, F_list=F,
                  random_effects="single",                       # spm_dcm_peb: M.Q absent
                  alpha=float(s["alpha_default"]), beta=float(s["beta_default"]),
                  hE=float(np.ravel(s["hE"])[0]), hC=float(np.ravel(s["hC"])[0]))
    bma = bmr_search(peb)
    return ref, peb, bma


def test_peb_selects_the_parameters_spm_selects():
    ref = _load("peb_2region.json")
    _, _, select_parameters = _peb_api()
    Ep, Cp, pE, pC, X, select, names, F = _peb_inputs(ref)
    assert len(Ep[0]) == 20
    if select_parameters is None:
        pytest.skip("no select_parameters")
    assert select_parameters(names, fields=("A", "B"), prior_variance=np.diag(pC)) == select


def test_peb_defaults_follow_spm_dcm_peb_r7771():
    """spm_dcm_peb r7771 with M.X only: M.Q 'single', alpha 1, beta 16, hE 0, hC 1/16."""
    ref = _load("peb_2region.json")
    fit_peb, _, _ = _peb_api()
    s = ref["settings"]
    assert s["alpha_implied"] == pytest.approx(1.0) and s["beta_implied"] == pytest.approx(16.0)
    defaults = {k: p.default for k, p in inspect.signature(fit_peb).parameters.items()}
    expected = {"random_effects": "single", "alpha": 1.0, "beta": 16.0,
                "hE": float(np.ravel(s["hE"])[0]), "hC": float(np.ravel(s["hC"])[0])}
    got = {k: defaults.get(k) for k in expected}
    assert got == expected, f"fit_peb defaults {got}, spm_dcm_peb r7771 {expected}"


def test_peb_expectations_match_spm():
    ref, peb, _ = _fit_peb_like_spm()
    spm_ep = np.asarray(ref["peb"]["Ep"], dtype=float).reshape(peb.Ep.shape)
    diff = peb.Ep - spm_ep
    names = [f"{c}:{p}" for c in peb.covariate_names for p in peb.param_names]
    assert np.abs(diff).max() <= EP_TOL, (
        f"PEB max |Ep - Ep_SPM| = {np.abs(diff).max():.4f}\n"
        + _table(names, peb.Ep.ravel(order="F"), spm_ep.ravel(order="F")))


def test_peb_free_energy_and_precision_match_spm():
    ref, peb, _ = _fit_peb_like_spm()
    spm_f = float(ref["peb"]["F"])
    spm_eh = np.ravel(ref["peb"]["Eh"]).astype(float)
    assert abs(peb.F - spm_f) <= F_TOL, f"PEB F ours {peb.F:.4f}, SPM {spm_f:.4f}, diff {peb.F - spm_f:+.4f}"
    np.testing.assert_allclose(peb.Eh, spm_eh, atol=0.25)


def test_bma_expectations_match_spm():
    ref, peb, bma = _fit_peb_like_spm()
    spm_ep = np.asarray(ref["bma"]["Ep"], dtype=float).reshape(bma.Ep.shape)
    diff = bma.Ep - spm_ep
    names = [f"{c}:{p}" for c in bma.covariate_names for p in bma.param_names]
    assert np.abs(diff).max() <= EP_TOL, (
        f"BMA max |Ep - Ep_SPM| = {np.abs(diff).max():.4f}\n"
        + _table(names, bma.Ep.ravel(order="F"), spm_ep.ravel(order="F")))


def test_bma_same_effects_at_pp_095():
    ref, peb, bma = _fit_peb_like_spm()
    spm_pp = np.asarray(ref["bma"]["Pp"], dtype=float).reshape(bma.Pp.shape)
    names = np.array([[f"{c}:{p}" for c in bma.covariate_names] for p in bma.param_names])
    ours = set(names[bma.Pp > PP_THRESHOLD])
    spm = set(names[spm_pp > PP_THRESHOLD])
    assert ours == spm, (f"effects at Pp > {PP_THRESHOLD}: ours only {sorted(ours - spm)}, "
                         f"SPM only {sorted(spm - ours)}\nPp ours {bma.Pp.round(3).tolist()}\n"
                         f"Pp SPM  {spm_pp.round(3).tolist()}")


def test_peb_planted_effect_found_by_spm():
    """Sanity of the reference itself: SPM finds the planted cov1 effect on B(2,1,2) (R1 -> R2)."""
    ref = _load("peb_2region.json")
    pnames = list(ref["peb"]["Pnames"])
    xnames = list(ref["design"]["Xnames"])
    pp = np.asarray(ref["bma"]["Pp"], dtype=float).reshape(len(pnames), len(xnames))
    assert pp[pnames.index("B(2,1,2)"), xnames.index("cov1")] > PP_THRESHOLD
    # (not asserted: the null covariate cov2 stays below threshold. With 12 subjects SPM
    # gives cov2 on A(2,2) Pp = 0.958, a chance correlation with the simulated
    # between-subject variability of A(2,2); it is part of the reference as it is.)

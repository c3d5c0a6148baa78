"""Forward simulation of DCM for fMRI (SPM12 ``spm_dcm_generate``)."""

from __future__ import annotations

import numpy as np

from ptsd_bidsapp.dcm.api import DCMSpec

__all__ = ["simulate_dcm", "ar1_noise"]

#: AR(1) coefficient of the observation noise in ``spm_dcm_generate``.
NOISE_AR = 1.0 / 16.0


def ar1_noise(n_scans: int, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance AR(1) noise (coefficient 1/16), scaled as ``spm_dcm_generate``.

    ``e = K z`` with ``K = (I - a L)^-1`` (``L`` the lag operator), rescaled so that
    ``trace(K K') = n_scans``.
    """
    z = rng.standard_normal((n_scans, n_regions))
    e = np.empty_like(z)
    prev = np.zeros(n_regions)
    for t in range(n_scans):  # K z by recursion: e_t = z_t + a e_{t-1}
        prev = z[t] + NOISE_AR * prev
        e[t] = prev
    # trace(K K') = sum_t sum_{k<=t} a^{2k}
    powers = NOISE_AR ** (2 * np.arange(n_scans))
    trace = np.cumsum(powers).sum()
    return e * np.sqrt(n_scans / trace)


def simulate_dcm(spec: DCMSpec, params, snr: float | None = None, rng=None):
    """Simulate regional BOLD from a DCM (SPM12 ``spm_dcm_generate``).

    The inputs are integrated as in estimation (mean-centred when
    ``spec.centre_inputs``; note ``spm_dcm_generate`` itself never centres — set
    ``centre_inputs=False`` to reproduce it), with the SPM12 bilinear integrator at
    microtime resolution and the TE-dependent BOLD observation.

    Parameters
    ----------
    spec : DCMSpec
        Model, inputs and timing (``y`` is ignored). The number of scans is
        ``spec.n_scans``.
    params : dict or array
        Parameters in SPM's parameterisation:

        - ``A`` (n, n): ``A[to, from]`` in Hz off the diagonal; diagonal entries are
          log scale factors of the self-inhibition ``-exp(A_ii)/2`` Hz (0 -> -0.5 Hz);
        - ``B`` (m, n, n) indexed ``[input, to, from]``, or dict ``{input name: (n, n)}``
          (missing inputs zero); diagonal entries modulate the log self-inhibition;
        - ``C`` (n, m): ``C[to, input]``, in SPM units (the flow receives ``C u / 16``);
        - ``transit`` (n,), ``decay`` (n,): log scale factors of the transit time (2 s)
          and signal decay (0.64 /s); ``epsilon`` (float): log ratio of intra- to
          extravascular signal. Missing haemodynamic fields default to 0.

        A vector in the order of :func:`ptsd_bidsapp.dcm.priors.parameter_names` is
        accepted too.
    snr : float, optional
        Signal-to-noise ratio (SD of the signal / SD of the noise, per region). ``None``
        or ``inf``: noise-free. Noise is AR(1) (coefficient 1/16) as ``spm_dcm_generate``.
    rng : numpy.random.Generator or int, optional
        Random generator or seed for the noise.

    Returns
    -------
    y : array (scans, n)
        BOLD signal change (%), noisy when ``snr`` is given.
    x : array (scans, n, 5)
        Hidden states at each region's sampling time: neuronal activity, vasodilatory
        signal, log flow, log volume, log deoxyhaemoglobin.
    """
    y, x = spec.predict(params, return_states=True)
    if snr is not None and np.isfinite(snr):
        if snr <= 0:
            raise ValueError("snr must be positive")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        sd = y.std(axis=0, ddof=1) / snr  # MATLAB std: n - 1
        y = y + ar1_noise(y.shape[0], y.shape[1], rng) * sd[None, :]
    return y, x

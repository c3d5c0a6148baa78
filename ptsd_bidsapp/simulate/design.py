"""Task designs (events) and hemodynamic convolution for the simulated trial.

Times are in seconds. Neural signals are built on a microtime grid of ``TR / MICROTIME``
seconds and sampled at the slice-timing reference ``n * TR + start_time`` (fMRIPrep's
``StartTime``), the frame times nilearn uses with ``slice_time_ref = StartTime / TR``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: microtime bins per TR (SPM's default fMRI_T = 16)
MICROTIME = 16

FACES_BLOCK_S = 20.0  # one block of 10 faces, 2 s each
FACES_REST_S = 10.0  # fixation between blocks
CONFLICT_STIM_S = 1.0  # face-word Stroop stimulus (Etkin et al. 2006)
CONFLICT_ITI_S = (3.0, 6.0)  # uniform jitter of stimulus onset asynchrony


def faces_events(n_volumes: int, tr: float, rng: np.random.Generator) -> pd.DataFrame:
    """Block design of fearful/neutral face blocks separated by fixation.

    Block order is pseudo-random with both conditions in every pair of blocks.
    """
    duration = n_volumes * tr
    rows = []
    onset = 10.0
    pair = 0
    while True:
        order = ["fearful", "neutral"] if rng.random() < 0.5 else ["neutral", "fearful"]
        stop = False
        for cond in order:
            if onset + FACES_BLOCK_S > duration - 4.0:
                stop = True
                break
            rows.append({"onset": onset, "duration": FACES_BLOCK_S, "trial_type": cond})
            onset += FACES_BLOCK_S + FACES_REST_S
        if stop:
            break
        pair += 1
    table = pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])
    for cond in ("fearful", "neutral"):  # very short runs: keep at least one block of each
        if cond not in set(table["trial_type"]):
            table.loc[len(table)] = {"onset": min(2.0, duration / 4), "duration": min(FACES_BLOCK_S, duration / 4),
                                     "trial_type": cond}
    return table.sort_values("onset").reset_index(drop=True)


#: The conflict task's conditions in the default config (previous x current congruency).
CONFLICT_CONDITIONS = ("cC", "cI", "iC", "iI")


def conflict_events(n_volumes: int, tr: float, rng: np.random.Generator) -> pd.DataFrame:
    """Event-related emotional conflict (face-word Stroop) trials.

    ``trial_type`` codes previous and current congruency (``cC``, ``cI``, ``iC``, ``iI``;
    lower case = previous trial, upper case = current trial; Etkin et al. 2006). The
    first trial has no predecessor and is labelled ``first``.
    """
    duration = n_volumes * tr
    onsets = []
    t = 4.0
    while t + CONFLICT_STIM_S < duration - 8.0:
        onsets.append(t)
        t += CONFLICT_STIM_S + rng.uniform(*CONFLICT_ITI_S)
    current = rng.random(len(onsets)) < 0.5  # True = incongruent
    # every configured condition (cC, cI, iC, iI) must occur, or the app rejects the run: redraw
    # the congruency sequence while one is missing (runs that have all four are unchanged)
    for _ in range(1000):
        pairs = {("i" if a else "c") + ("I" if b else "C") for a, b in zip(current[:-1], current[1:])}
        if pairs >= set(CONFLICT_CONDITIONS):
            break
        current = rng.random(len(onsets)) < 0.5
    else:
        raise ValueError(f"a conflict run of {n_volumes} volumes (TR {tr} s) has {len(onsets)} trials: too few to "
                         f"contain every condition ({', '.join(CONFLICT_CONDITIONS)}); use more volumes")
    rows = []
    for k, onset in enumerate(onsets):
        cur = "I" if current[k] else "C"
        if k == 0:
            ttype = "first"
        else:
            ttype = ("i" if current[k - 1] else "c") + cur
        rows.append({
            "onset": round(onset, 3),
            "duration": CONFLICT_STIM_S,
            "trial_type": ttype,
            "congruency": "incongruent" if current[k] else "congruent",
            "response_time": round(float(rng.uniform(0.6, 1.1) + (0.08 if current[k] else 0.0)), 3),
        })
    table = pd.DataFrame(rows)
    return table


def boxcar(events: pd.DataFrame, conditions, n_volumes: int, tr: float) -> dict[str, np.ndarray]:
    """Neural input per condition on the microtime grid (1 during a stimulus, else 0)."""
    dt = tr / MICROTIME
    n = n_volumes * MICROTIME
    out = {}
    for cond in conditions:
        u = np.zeros(n)
        for _, ev in events[events["trial_type"] == cond].iterrows():
            start = int(round(ev["onset"] / dt))
            stop = max(start + 1, int(round((ev["onset"] + ev["duration"]) / dt)))
            u[start:min(stop, n)] = 1.0
        out[cond] = u
    return out


def hrf_kernel(tr: float) -> np.ndarray:
    """SPM canonical HRF at microtime resolution, normalised to unit sum (nilearn ``spm_hrf``)."""
    from nilearn.glm.first_level.hemodynamic_models import spm_hrf

    return spm_hrf(tr, oversampling=MICROTIME)


def convolve_and_sample(neural: np.ndarray, tr: float, start_time: float, n_volumes: int) -> np.ndarray:
    """Convolve microtime neural signal(s) with the canonical HRF and sample at frame times.

    Parameters
    ----------
    neural : ndarray (n_microtime,) or (n_microtime, k)
    tr, start_time : float
        Seconds.

    Returns
    -------
    ndarray (n_volumes,) or (n_volumes, k)
        A sustained unit neural input gives a plateau of 1 (as nilearn's regressors).
    """
    kernel = hrf_kernel(tr)
    x = np.asarray(neural, dtype=float)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[:, None]
    n = x.shape[0]
    conv = np.stack([np.convolve(x[:, j], kernel)[:n] for j in range(x.shape[1])], axis=1)
    idx = np.clip(np.rint((np.arange(n_volumes) * tr + start_time) / (tr / MICROTIME)).astype(int), 0, n - 1)
    out = conv[idx]
    return out[:, 0] if squeeze else out


def smooth_noise(n: int, rng: np.random.Generator, tr: float, cutoff_s: float = 10.0) -> np.ndarray:
    """Unit-variance band-limited neural fluctuation on the microtime grid (AR(1) smoothed, time constant ~ cutoff/2pi)."""
    from scipy.signal import lfilter

    dt = tr / MICROTIME
    phi = np.exp(-2 * np.pi * dt / cutoff_s)
    x = lfilter([1.0], [1.0, -phi], rng.standard_normal(n + 400))[400:]
    x = lfilter([1.0], [1.0, -phi], np.r_[np.zeros(1), x])[1:]
    x -= x.mean()
    return x / x.std()

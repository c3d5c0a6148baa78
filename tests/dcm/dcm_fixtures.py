"""Small synthetic DCM designs shared by the DCM tests (offline, deterministic)."""

from __future__ import annotations

import numpy as np

from ptsd_bidsapp.dcm import DCMSpec

TR = 2.0
MICROTIME = 16
TE = 0.03
REGIONS = ["amygdala", "vmpfc"]
INPUTS = ["faces", "fearful"]


def faces_inputs(n_scans: int = 200, tr: float = TR, block_s: float = 16.0) -> np.ndarray:
    """Block design on the microtime grid: faces blocks (16 s on, 16 s off), every other one fearful."""
    dt = tr / MICROTIME
    u = np.zeros((n_scans * MICROTIME, 2))
    period = int(round(2 * block_s / dt))
    on = int(round(block_s / dt))
    for i, start in enumerate(range(0, u.shape[0], period)):
        u[start:start + on, 0] = 1.0
        if i % 2 == 0:
            u[start:start + on, 1] = 1.0
    return u


def faces_spec(y=None, n_scans: int = 200, with_b: bool = True, **kwargs) -> DCMSpec:
    """The default faces DCM: full A, faces drive the amygdala, fearful modulates both extrinsic connections."""
    a = np.ones((2, 2))
    b = np.zeros((2, 2, 2))
    if with_b:
        b[1] = [[0, 1], [1, 0]]
    c = np.array([[1, 0], [0, 0]])
    return DCMSpec(a, b, c, faces_inputs(n_scans), TR / MICROTIME, TR, TE, y=y,
                   region_names=REGIONS, input_names=INPUTS, n_scans=None if y is not None else n_scans, **kwargs)


def random_faces_parameters(rng: np.random.Generator, b_min: float = 0.0, c_range=(0.3, 0.8)) -> dict:
    """Generating parameters in plausible ranges (Hz); B magnitudes at least ``b_min``."""
    def signed(lo, hi):
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))

    if b_min > 0:
        b_av, b_va = signed(b_min, 0.5), signed(b_min, 0.5)
    else:
        b_av, b_va = float(rng.uniform(-0.4, 0.2)), float(rng.uniform(-0.2, 0.5))
    return {
        "A": [[float(rng.normal(0, 0.1)), float(rng.uniform(-0.5, 0.1))],
              [float(rng.uniform(0.1, 0.6)), float(rng.normal(0, 0.1))]],
        "B": {"fearful": [[0.0, b_av], [b_va, 0.0]]},
        "C": [[float(rng.uniform(*c_range)), 0.0], [0.0, 0.0]],
        "transit": rng.normal(0, 1 / 16, 2),
        "decay": rng.normal(0, 1 / 16),
        "epsilon": float(rng.normal(0, 1 / 16)),
    }

"""Text of ``sourcedata/simulation/README.md`` written with every simulated trial."""

TRUTH_README = """\
# Simulation ground truth (`truth.json`)

Written by `ptsd-bidsapp-simulate` (`ptsd_bidsapp.simulate.simulate_trial`). Everything the
simulator drew at random is here, so an analysis of this dataset can be scored against it.
Format: ARCHITECTURE.md, Contract 4.

## Top level

| key | meaning |
|---|---|
| `seed`, `n_subjects` | the same seed writes byte-identical files |
| `tr`, `te`, `start_time` | seconds; BOLD is sampled at `n * tr + start_time` (fMRIPrep `StartTime`, slice-timing reference) |
| `n_volumes` | volumes per run, by task |
| `resolution_mm`, `space` | grid of the derivatives (MNI152NLin2009cAsym, origin -96, -132, -78 mm) |
| `roi_labels` | atlas-ptsdcircuit ROI labels (Contract 1); their voxels carry the signals below |
| `dcm_forward_model` | which implementation produced the faces amygdala/vmPFC BOLD |
| `improvement` | improvement = CAPS-5 pre - post; `improvement_z = (improvement - 10.5) / 9` |
| `change_model` | how planted session changes depend on improvement |
| `effects` | one entry per measure identifier (Contract 2) |
| `subjects` | per-subject parameters |

## Planted effects (`effects`)

For each measure: `pre = pre_mean + pre_sd * N(0,1)` (+ `baseline_slope_by_group[group] * improvement_z`
where given) and `post = pre + slope_by_group[group] * improvement_z + noise_sd * N(0,1)`.
`slope_improvement` is the slope in the arm(s) named by `applies_to` (`all`: both arms, value of
the midazolam arm; `ketamine`: ketamine only), `slope_interaction` = ketamine slope - midazolam
slope, `null: true` marks measures generated with no relation to improvement or drug.

- `gppi_faces_fearfulMinusNeutral_vmpfc-amygdala` -- the amygdala follows vmPFC's neural
  fluctuation z(t) (HRF-convolved SD 0.5 % in vmPFC) with gain 0.2 outside fearful blocks and
  `0.2 + value` during fearful blocks (top-down, condition-dependent coupling). The value is the
  expected vmPFC-seed -> amygdala gPPI fearful-minus-neutral interaction beta; the reverse direction
  (amygdala seed -> vmPFC) also carries the DCM's fearful modulation of amygdala -> vmPFC, which
  falls with improvement, so the directed vmPFC -> amygdala estimate is the cleanest read-out and the
  symmetrised mean is diluted. Both ROIs also carry the DCM signals. Change grows with improvement,
  about twice as steeply under ketamine.
- `activation_conflict_conflictRegulation_dacc` -- dACC amplitude of iI minus cI events (percent
  signal change per unit HRF-convolved 1 s event regressor, nilearn/SPM canonical HRF normalised as
  nilearn's). Change falls with improvement under ketamine only.
- `fc_rest_vmpfc-antinsula` -- Fisher z of the correlation of the noise-free vmPFC and anterior
  insula rest signals (shared latent fluctuation). Change rises with improvement under ketamine only.
  Measured correlations are attenuated by noise; the change is what is planted.
- `dcm_faces_B_fearful_amygdala-vmpfc` -- fearful-face modulation of amygdala -> vmPFC (Hz):
  decreases with improvement under either drug. It drives vmPFC's fearful-face response, so the vmPFC
  fearful-minus-neutral activation change also falls with improvement (implied, not listed).
- `dcm_faces_A_vmpfc-amygdala` -- intrinsic vmPFC -> amygdala (Hz, negative = inhibition): more
  negative with improvement under ketamine only; a less negative baseline goes with more
  improvement under ketamine.
- null measures: `activation_faces_fearfulMinusNeutral_dacc`, `fc_rest_amygdala-anthippo`,
  `gppi_faces_fearfulMinusNeutral_anthippo-antinsula`.

## Per subject (`subjects["sub-XX"]`)

- `group` (`ketamine`/`midazolam`), `improvement`, `improvement_z`, `caps5` and `madrs`
  (`pre`/`post`, also in `sub-XX/sub-XX_sessions.tsv`), `age`, `sex`;
- `measures.pre` / `measures.post`: the planted value of every measure in `effects`;
- `dcm.pre` / `dcm.post`: the bilinear DCM of the faces task. Regions `[amygdala, vmpfc]`,
  inputs `[faces, fearful]` (faces = all face blocks, fearful = fearful blocks), mean-centred as
  SPM's `options.centre`. `A[to][from]` in Hz with SPM's log self-connections on the diagonal
  (self-inhibition `-exp(a)/2` Hz), `B[input][to][from]`, `C[to][input]`, `transit`, `decay`
  (log scale factors per region), `epsilon`. `A[0][1]` = vmPFC -> amygdala,
  `A[1][0]` = amygdala -> vmPFC, `B.fearful[1][0]` = fearful modulation of amygdala -> vmPFC;
- `motion`: per session and task the mean and max framewise displacement (Power 2012, mm),
  volumes where sudden head movements start (`spike_onsets`), the number of non-steady-state
  volumes at the start of the run, and the subject's motion level.

## Images

Each run's voxels inside the brain mask carry: the ROI signal (percent signal change, voxel
loadings 0.7-1.3, mean 1, inside each ROI); AR(1) voxel noise (1 %); spatially smooth noise modes
(FWHM 12 mm) with AR(1) time courses; physiological noise loading on a CSF region; a global
fluctuation; slow drifts; residual motion (first-order intensity change of the baseline image under
the rigid displacement of the motion parameters) and a spin-history-like drop proportional to FD;
bright non-steady-state volumes. Voxels outside the mask are 0. The confounds TSV is computed from
these images and motion as fMRIPrep names its columns (global_signal, csf, white_matter with
derivatives/powers, dvars/std_dvars, framewise_displacement, a_comp_cor_XX (combined WM+CSF mask,
50 % variance), cosine_XX (128 s), non_steady_state_outlier_XX, 24 motion terms, motion_outlier_XX
for FD > 0.5 mm or std DVARS > 1.5).
"""

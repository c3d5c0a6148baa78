% Reference PPI regressors from SPM12 r7771 spm_peb_ppi, for tests/measures/test_gppi_spm12.py.
%
% Builds small synthetic cases (a seed VOI time series, confounds X0 and a faces-like block
% design or zero-duration events) at several TRs and microtime settings (SPM fMRI_T / fMRI_T0),
% constructs the minimal SPM structure spm_peb_ppi reads (xY.RT, xBF.T/T0/dt/UNITS, nscan,
% Sess.U from spm_get_ons, Sess.row, xX.W = I as for an i.i.d. first level) and a VOI
% structure (xY.u, xY.X0, xY.Sess), and calls
%
%     PPI = spm_peb_ppi(SPM, 'ppi', xY, [c 1 1], name, 0)
%
% once per condition c (gPPI: one interaction per condition, weight 1), headless (no
% graphics). spm_peb_ppi itself runs under Octave; no lower-level SPM routine is called
% in its place. Writes under OUT_DIR (default tests/data/spm12/ppi):
%
%   cases.json               case list: TR, fMRI_T, fMRI_T0, scans, events, file names, SPM $Id lines
%   <input>_inputs.csv       seed (xY.u) and confounds (xY.X0 columns), one row per scan
%   <input>_xn.csv           PPI.xn (microtime, dt = TR/fMRI_T), shared by the fMRI_T0 variants
%   <case>_outputs.csv       PPI.Y, PPI.P and PPI.ppi per condition, one row per scan
%
% Usage (from the repository root):
%   SPM12_DIR=/opt/spm12 octave --no-gui --quiet scripts/spm12_reference/ppi/make_ppi_reference.m

spm_dir = getenv('SPM12_DIR'); if isempty(spm_dir), spm_dir = '/opt/spm12'; end
out_dir = getenv('OUT_DIR');   if isempty(out_dir), out_dir = fullfile(pwd, 'tests', 'data', 'spm12', 'ppi'); end
addpath(spm_dir);
if ~exist(out_dir, 'dir'), mkdir(out_dir); end
work = tempname(); mkdir(work);            % spm_peb_ppi saves PPI_<name>.mat into SPM.swd

conditions = {'fearful', 'neutral'};
% input sets: name, TR (s), fMRI_T, scans, design, seed scale, random stream
% (tr2p0_t16_scale10 is tr2p0_t16 with the seed x10: with known covariances the posterior mean is
% linear in the data, so SPM's PPI.ppi is exactly 10 times that of tr2p0_t16; a noise variance
% estimated from the data (ReML) would change its shape)
inputs = { ...
  'tr0p8_t16', 0.8, 16, 200, 'blocks', 1, 1; ...
  'tr0p8_t24', 0.8, 24, 200, 'blocks', 1, 2; ...
  'tr2p0_t16', 2.0, 16, 100, 'blocks', 1, 3; ...
  'tr2p0_t24', 2.0, 24, 100, 'blocks', 1, 4; ...
  'tr2p5_t16', 2.5, 16,  80, 'blocks', 1, 5; ...
  'tr2p5_t24', 2.5, 24,  80, 'blocks', 1, 6; ...
  'tr2p0_t16_events', 2.0, 16, 100, 'events', 1, 7; ...
  'tr2p0_t16_scale10', 2.0, 16, 100, 'blocks', 10, 3};
t0_sets = {[1 8], [1 8], [1 8], [1 8], [1 8], [1 8], [8], [8]};

ids = {};
for f = {'spm_peb_ppi.m', 'spm_PEB.m', 'spm_hrf.m', 'spm_dctmtx.m', 'spm_get_ons.m', 'spm_detrend.m', 'spm_inv.m'}
  txt = fileread(fullfile(spm_dir, f{1}));
  tok = regexp(txt, '\$Id: [^\$]*\$', 'match', 'once');
  ids{end + 1} = tok;
end
release = regexp(fileread(fullfile(spm_dir, 'Contents.m')), 'Version \d+ \(SPM12\) [^\n]*', 'match', 'once');

cases = {};
for s = 1:size(inputs, 1)
  [iname, TR, T, N, design, scale, stream] = inputs{s, :};
  dt = TR / T;
  % --- seed: smooth neural signal at microtime, canonical HRF, sampled at bin 0, + noise
  randn('state', 1000 + stream); rand('state', 2000 + stream);
  if strcmp(design, 'blocks')
    ons = {[], []}; dur = {[], []}; t = 10; k = 0;
    while t + 20 <= N * TR - 4
      c = mod(k, 2) + 1; ons{c}(end + 1) = t; dur{c}(end + 1) = 20; t = t + 30; k = k + 1;
    end
  else
    ons = {[], []}; dur = {[], []}; t = 4;
    while t < N * TR - 8
      c = (rand() < 0.5) + 1; ons{c}(end + 1) = round(t * 10) / 10; dur{c}(end + 1) = 0;
      t = t + 3 + 3 * rand();
    end
  end
  SPM = struct();
  SPM.xY.RT = TR; SPM.xBF.T = T; SPM.xBF.T0 = 1; SPM.xBF.dt = dt; SPM.xBF.UNITS = 'secs';
  SPM.nscan = N;
  for c = 1:2
    SPM.Sess(1).U(c).name = conditions(c); SPM.Sess(1).U(c).ons = ons{c};
    SPM.Sess(1).U(c).dur = dur{c}; SPM.Sess(1).U(c).P(1).name = 'none';
  end
  SPM.Sess(1).U = spm_get_ons(SPM, 1);
  SPM.Sess(1).row = 1:N;
  SPM.xX.W = speye(N);
  SPM.pwd = work;
  z = conv(randn(N * T + 256, 1), hanning(round(4 / dt)) / sum(hanning(round(4 / dt))), 'same');
  z = z(129:128 + N * T); z = (z - mean(z)) / std(z);
  u1 = full(SPM.Sess(1).U(1).u(33:end)); u2 = full(SPM.Sess(1).U(2).u(33:end));
  if strcmp(design, 'events'), u1 = u1 * dt; u2 = u2 * dt; end
  neural = z + 0.8 * u1 + 0.4 * u2 + 0.6 * (u1 - mean(u1)) .* z;
  bold = conv(neural, spm_hrf(dt)); bold = bold((0:N - 1) * T + 1);
  bold = 0.8 * bold / std(bold);
  X0 = [ones(N, 1), spm_dctmtx(N, 3)(:, 2:3), 0.2 * randn(N, 1)];
  seed = scale * (bold + 0.3 * randn(N, 1) + X0 * [100; 0.5; -0.3; 0.2]);
  xY = struct('u', seed, 'X0', X0, 'Sess', 1, 'name', iname);
  fid = fopen(fullfile(out_dir, [iname '_inputs.csv']), 'w');
  fprintf(fid, 'seed,x0_1,x0_2,x0_3,x0_4\n');
  fprintf(fid, '%.10g,%.10g,%.10g,%.10g,%.10g\n', [seed X0]');
  fclose(fid);
  events = struct('onset', {}, 'duration', {}, 'trial_type', {});
  for c = 1:2
    for j = 1:numel(ons{c})
      events(end + 1) = struct('onset', ons{c}(j), 'duration', dur{c}(j), 'trial_type', conditions{c});
    end
  end
  [~, order] = sort([events.onset]); events = events(order);
  xn_ref = [];
  for T0 = t0_sets{s}
    SPM.xBF.T0 = T0;
    cname = sprintf('%s_T0%d', iname, T0);
    cols = []; xn = [];
    for c = 1:2
      PPI = spm_peb_ppi(SPM, 'ppi', xY, [c 1 1], cname, 0);
      if c == 1, cols = PPI.Y; xn = PPI.xn; P1 = PPI.P; ppi1 = PPI.ppi;
      else, assert(max(abs(PPI.xn - xn)) == 0); P2 = PPI.P; ppi2 = PPI.ppi; end
    end
    if isempty(xn_ref)
      xn_ref = xn;
      fid = fopen(fullfile(out_dir, [iname '_xn.csv']), 'w');
      fprintf(fid, 'xn\n'); fprintf(fid, '%.8g\n', xn); fclose(fid);
    else
      assert(max(abs(xn - xn_ref)) < 1e-12);   % the basis does not depend on fMRI_T0
    end
    fid = fopen(fullfile(out_dir, [cname '_outputs.csv']), 'w');
    fprintf(fid, 'Y,P_fearful,P_neutral,ppi_fearful,ppi_neutral\n');
    fprintf(fid, '%.10g,%.10g,%.10g,%.10g,%.10g\n', [cols P1 P2 ppi1 ppi2]');
    fclose(fid);
    cases{end + 1} = struct('name', cname, 'tr', TR, 'fmri_t', T, 'fmri_t0', T0, 'n_scans', N, ...
                            'design', design, 'seed_scale', scale, 'inputs', [iname '_inputs.csv'], ...
                            'xn', [iname '_xn.csv'], 'outputs', [cname '_outputs.csv'], 'events', events);
  end
end
meta = struct('generator', 'scripts/spm12_reference/ppi/make_ppi_reference.m', ...
              'spm_release', release, 'spm_ids', {ids}, 'octave', version(), ...
              'call', 'spm_peb_ppi(SPM, ''ppi'', xY, [c 1 1], name, 0) per condition c; SPM.xX.W = I', ...
              'cases', {cases});
fid = fopen(fullfile(out_dir, 'cases.json'), 'w'); fprintf(fid, '%s\n', jsonencode(meta)); fclose(fid);
rmdir(work, 's');
printf('wrote %d cases to %s\n', numel(cases), out_dir);

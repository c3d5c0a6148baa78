function make_peb_reference(outdir, Ns, cachefile)
% Reference PEB / BMR-BMA results from SPM12 (r7771) for tests/dcm/test_spm12_reference.py.
%
% FORMAT make_peb_reference(outdir, Ns, cachefile)
% outdir    - where to write peb_2region.json (default: tests/data/spm12)
% Ns        - number of simulated subjects (default 12)
% cachefile - optional .mat file caching the first-level DCMs (reused if present)
%
% Ns subjects of a 2-region DCM (block driving input -> R1, modulatory input on both
% extrinsic connections). Between-subject design M.X = [1 cov1 cov2] (covariates
% mean-centred, unit SD): cov1 truly modulates B(2,1,2) (R1 -> R2 under the modulatory
% input), cov2 is null. Each subject's DCM is estimated with spm_dcm_estimate, then
%   PEB       = spm_dcm_peb(GCM, M, {'A','B'})   with only M.X set (SPM defaults otherwise)
%   [BMA,BMR] = spm_dcm_peb_bmc(PEB)
% The JSON keeps every subject's Ep / Cp / F (so the PEB can be rerun from exactly the
% same first-level posteriors), SPM's PEB and BMA outputs and the settings SPM used.

if nargin < 1 || isempty(outdir), outdir = fullfile('tests', 'data', 'spm12'); end
if nargin < 2 || isempty(Ns), Ns = 12; end
if nargin < 3, cachefile = ''; end
if ~exist(outdir, 'dir'), mkdir(outdir); end
outdir = make_absolute(outdir);

spm12_ref_common('init');
prov = spm12_ref_common('provenance');

% ---------------------------------------------------------------- design
n = 2; TR = 2; v = 120; T = 16; dt = TR / T; bins = v * T;
t = (0:bins - 1)' * dt;
blk = floor(t / 20);
u = zeros(bins, 2);
u(:, 1) = mod(blk, 2) == 1;                       % task blocks (driving)
u(:, 2) = u(:, 1) & mod(floor(blk / 2), 2) == 1;  % modulation: every other task block
a = ones(n);
b = zeros(n, n, 2); b(2, 1, 2) = 1; b(1, 2, 2) = 1;
c = [1 0; 0 0];
d = zeros(n, n, 0);
options = struct('nonlinear', 0, 'two_state', 0, 'stochastic', 0, 'centre', 1, ...
    'induced', 0, 'nograph', 1, 'maxit', 128, 'hidden', [], 'hE', 6, 'hC', 1/128);

randn('state', 5150);
cov1 = randn(Ns, 1); cov1 = (cov1 - mean(cov1)) / std(cov1);
cov2 = randn(Ns, 1); cov2 = (cov2 - mean(cov2)) / std(cov2);
X = [ones(Ns, 1) cov1 cov2];
% true group effects on [A(1,1) A(2,1) A(1,2) A(2,2)] and [B(2,1,2) B(1,2,2)]
A_mean = [0 0.1; 0.4 0];
B21_mean = 0.3; B21_cov1 = 0.25; B12_mean = 0;
sd_A = 0.08; sd_B = 0.05;
Atrue = zeros(n, n, Ns); B21 = zeros(Ns, 1); B12 = zeros(Ns, 1);
for i = 1:Ns
    Atrue(:, :, i) = A_mean + sd_A * randn(n);
    B21(i) = B21_mean + B21_cov1 * cov1(i) + sd_B * randn;
    B12(i) = B12_mean + sd_B * randn;
end

% ---------------------------------------------------------------- first level
if ~isempty(cachefile) && exist(cachefile, 'file')
    load(cachefile, 'GCM', 'seconds', 'iters', 'Ptrue');
    fprintf('loaded %d first-level DCMs from %s\n', numel(GCM), cachefile);
else
    GCM = cell(Ns, 1); seconds = zeros(Ns, 1); iters = zeros(Ns, 1); Ptrue = zeros(Ns, 20);
    for i = 1:Ns
        DCM = struct();
        DCM.a = a; DCM.b = b; DCM.c = c; DCM.d = d;
        DCM.U.u = u; DCM.U.dt = dt; DCM.U.name = {'task', 'mod'};
        DCM.Y.dt = TR; DCM.Y.name = {'R1', 'R2'};
        DCM.Y.X0 = spm12_ref_common('dct', v, TR);
        DCM.Y.Q = spm_Ce(ones(1, n) * v);
        DCM.n = n; DCM.v = v; DCM.TE = 0.04; DCM.delays = [TR / 2; TR / 2];
        DCM.options = options;
        DCM.name = sprintf('sub-%02d', i);
        pE = spm_dcm_fmri_priors(a, b, c, d, options);
        P = pE;
        P.A = Atrue(:, :, i);
        P.B(2, 1, 2) = B21(i); P.B(1, 2, 2) = B12(i);
        P.C = [0.6 0; 0 0];
        Ptrue(i, :) = full(spm_vec(P))';
        DCM = spm12_ref_common('simulate', DCM, P, 3, 0.5, 6000 + i);
        DCM.Y = rmfield(DCM.Y, 'y_true');
        est = spm12_ref_common('estimate', DCM);
        GCM{i} = est.DCM;
        seconds(i) = est.seconds; iters(i) = est.n_iter;
        fprintf('subject %d: F = %.2f, %d iterations, %.1f s\n', i, est.DCM.F, est.n_iter, est.seconds);
    end
    if ~isempty(cachefile)
        save(cachefile, 'GCM', 'seconds', 'iters', 'Ptrue');
    end
end

% ---------------------------------------------------------------- PEB + BMR/BMA
M = struct();
M.X = X;
M.Xnames = {'mean', 'cov1', 'cov2'};
field = {'A', 'B'};
here = pwd;
work = tempname; mkdir(work); cd(work);           % spm_dcm_peb writes tmp.mat in pwd
try
    t0 = tic;
    peblog = evalc('PEB = spm_dcm_peb(GCM, M, field);');
    peb_seconds = toc(t0);
    t0 = tic;
    bmclog = evalc('[BMA, BMR] = spm_dcm_peb_bmc(PEB);');
    bmc_seconds = toc(t0);
catch err
    cd(here); rmdir(work, 's');
    rethrow(err);
end
cd(here); rmdir(work, 's');
fprintf('PEB: F = %.3f (%.1f s), BMC %.1f s\n', PEB.F, peb_seconds, bmc_seconds);

names = spm12_ref_common('names', n, 2);
[Np, Nx] = size(PEB.Ep);
S = struct();
S.case = 'peb_2region';
S.description = ['PEB over 2-region DCMs (task -> R1; modulation of R1->R2 and R2->R1); ' ...
                 'cov1 modulates B(2,1,2) (true effect 0.25 per SD), cov2 null; spm_dcm_peb(GCM, M, {''A'',''B''}) with M.X only, then spm_dcm_peb_bmc(PEB)'];
S.provenance = prov;
S.simulation = struct('seed', 5150, 'subject_noise_seeds', 6000 + (1:Ns), 'snr', 3, ...
    'A_mean', A_mean, 'B21_mean', B21_mean, 'B21_cov1', B21_cov1, 'B12_mean', B12_mean, ...
    'sd_A', sd_A, 'sd_B', sd_B, 'Ep_true', Ptrue, 'scans', v, 'TR', TR);
S.first_level.param_names = names;
S.first_level.pE = full(spm_vec(GCM{1}.M.pE))';
S.first_level.pC_diag = full(diag(GCM{1}.M.pC))';
S.first_level.seconds = seconds(:)';
S.first_level.n_iter = iters(:)';
for i = 1:Ns
    S.first_level.Ep{i} = full(spm_vec(GCM{i}.Ep))';
    S.first_level.Cp{i} = full(GCM{i}.Cp);
    S.first_level.F(i) = full(GCM{i}.F);
end
S.design.X = X;
S.design.Xnames = M.Xnames;
S.design.field = field;
% settings SPM used (M had only X: these are spm_dcm_peb's defaults as applied)
q = PEB.Pind(:)';
PC = full(GCM{1}.M.pC(q, q));
S.settings.field = field;
S.settings.Q_option = 'single (M.Q not given)';
S.settings.Q = cellfun(@full, PEB.M.Q, 'UniformOutput', false);
S.settings.hE = full(PEB.M.hE(:))';
S.settings.hC = full(PEB.M.hC);
S.settings.pE = full(PEB.M.pE(:))';
S.settings.pC_diag = full(diag(PEB.M.pC))';
S.settings.alpha_implied = full(PC(1, 1) * size(X, 1) / sum(X(:, 1).^2) / PEB.M.pC(1, 1));
S.settings.beta_implied = full(PEB.M.Q{1}(1, 1) * PC(1, 1));
S.settings.alpha_default = 1;
S.settings.beta_default = 16;
S.settings.maxit_default = 64;
S.settings.shrink_posteriors = 'qC = inv(inv(qC) + inv(pC)/16) when Ns > 1';
S.peb.Pind = q;                                  % 1-based indices into the spm_vec order
S.peb.Pnames = PEB.Pnames(:)';
S.peb.Ep = full(PEB.Ep);                         % Np x Nx
S.peb.Cp = full(PEB.Cp);
S.peb.Cp_diag = full(diag(PEB.Cp))';
S.peb.Eh = full(PEB.Eh(:))';
S.peb.Ch = full(PEB.Ch);
S.peb.Ce_diag = full(diag(PEB.Ce))';
S.peb.F = full(PEB.F);
S.peb.seconds = peb_seconds;
S.peb.log = keep_text_lines(peblog);
S.bma.Ep = reshape(full(spm_vec(BMA.Ep)), Np, Nx);
if isvector(BMA.Cp) && numel(BMA.Cp) == Np * Nx
    Cd = full(BMA.Cp(:));
else
    Cd = full(diag(BMA.Cp));
end
S.bma.Cp_diag = reshape(Cd, Np, Nx);
S.bma.Pp = reshape(full(spm_vec(BMA.Pp)), Np, Nx);
S.bma.seconds = bmc_seconds;
S.bma.log = keep_text_lines(bmclog);   % drop gnuplot's text-terminal plots
S.bma.note = 'spm_dcm_peb_bmc(PEB) -> spm_dcm_bmr_all(PEB): greedy BMR search, BMA; Pp = posterior probability of each effect being present';
spm12_ref_common('write', fullfile(outdir, 'peb_2region.json'), S);
end


function p = make_absolute(p)
if ~(numel(p) > 0 && (p(1) == '/' || p(1) == filesep))
    p = fullfile(pwd, p);
end
end


function s = keep_text_lines(s)
% keep the lines SPM prints (iterations, models removed), not text-terminal plots
lines = strsplit(s, "\n");
keep = ~cellfun(@isempty, regexp(lines, '(VL Iteration|parameters removed|BMR|BMC|Iteration)', 'once'));
s = strjoin(lines(keep), "\n");
end

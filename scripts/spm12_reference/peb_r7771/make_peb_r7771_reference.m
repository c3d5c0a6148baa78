function make_peb_r7771_reference(outdir, parts)
% SPM12 r7771 reference outputs of spm_dcm_peb / spm_dcm_peb_bmc / spm_dcm_loo for
% tests/peb/test_spm12_peb.py (our own driver; only public SPM12 routines are called).
%
% FORMAT make_peb_r7771_reference(outdir)      (default outdir: tests/data/spm12/peb_r7771)
%
% The first level is synthetic, so no DCM has to be estimated: Ns = 16 "subjects" of a
% 3-region fMRI DCM (priors of spm_dcm_fmri_priors: full A, three modulatory B, one C),
% whose parameters follow a between-subject GLM (design [1 cov1 cov2], cov2 null) with
% random effects, each observed through a Gaussian likelihood with correlated noise; the
% "DCM posterior" (Ep, Cp) is the exact Gaussian posterior under the DCM prior and F an
% arbitrary number. Cases (one JSON each):
%   single  spm_dcm_peb(GCM, M, {'A','B'}) with M.X only (defaults: M.Q 'single', alpha 1,
%           beta 16, hE 0, hC 1/16), then spm_dcm_peb_bmc(PEB) (36 second-level effects:
%           greedy search with nmax = 9)
%   all     the same with M.Q = 'all'
%   fields  M.Q = 'fields', M.alpha = 2, M.beta = 8, M.hE = 1, M.hC = 1/8
%   bonly   field {'B'}, M.X only (9 effects: nmax 8), then spm_dcm_peb_bmc
%   loo     spm_dcm_loo(GCM, [1 cov1], {'B'}) (qE, qC, class probabilities)
%   loo_ab  spm_dcm_loo(GCM, [1 cov1], {'A','B'}): fields whose prior variances are not in
%           descending order, where r7771's single-subject spm_dcm_peb mixes the subject's
%           (variance-sorted) and the group's (original) parameter order
% parts: cell array of parts to run ('peb', 'loo', 'loo_ab'; default all).
% spm_dcm_bma averages by Monte-Carlo sampling (1000 draws, rand/randn); every BMC is run
% with rand/randn state 1 (the recorded BMA). For a sampling-noise-free reference the same
% average is also computed with exact Gaussian-mixture moments from SPM's own
% spm_log_evidence_reduce of the Occam-window models (Ep_exact, Cp_diag_exact).
%
% Run from the repository root:
%   octave --no-gui --no-window-system --eval "addpath('/opt/spm12'); \
%     addpath('scripts/spm12_reference'); addpath('scripts/spm12_reference/peb_r7771'); \
%     make_peb_r7771_reference('tests/data/spm12/peb_r7771')"

if nargin < 1 || isempty(outdir), outdir = fullfile('tests', 'data', 'spm12', 'peb_r7771'); end
if nargin < 2 || isempty(parts), parts = {'peb', 'loo', 'loo_ab'}; end
if ~exist(outdir, 'dir'), mkdir(outdir); end
if outdir(1) ~= '/', outdir = fullfile(pwd, outdir); end
spm12_ref_common('init');

% ------------------------------------------------------------------ model and priors
n = 3;
a = ones(n);
b = zeros(n, n, 2); b(2, 1, 2) = 1; b(3, 2, 2) = 1; b(1, 3, 2) = 1;
c = zeros(n, 2); c(1, 1) = 1;
d = zeros(n, n, 0);
options = struct('nonlinear', 0, 'two_state', 0, 'stochastic', 0, 'centre', 1, 'induced', 0);
[pE, pC] = spm_dcm_fmri_priors(a, b, c, d, options);
pEv = full(spm_vec(pE));
pCd = full(diag(pC));
P = numel(pEv);
free = find(pCd > 0);
Nf = numel(free);
names = spm12_ref_common('names', n, 2);

% ------------------------------------------------------------------ group model
Ns = 16;
randn('state', 7771); rand('state', 7771);
cov1 = randn(Ns, 1); cov1 = (cov1 - mean(cov1)) / std(cov1);
cov2 = randn(Ns, 1); cov2 = (cov2 - mean(cov2)) / std(cov2);
X = [ones(Ns, 1) cov1 cov2];
iA = spm_fieldindices(pE, 'A'); iB = spm_fieldindices(pE, 'B');
iB = iB(pCd(iB) > 0);                                   % B(2,1,2), B(3,2,2), B(1,3,2)
mu = pEv;
mu(iA) = mu(iA) + [0.05; 0.35; -0.1; 0.1; 0.02; 0.3; 0.2; -0.15; -0.05];
mu(iB) = mu(iB) + [0.4; -0.2; 0];
eff1 = zeros(P, 1); eff1(iB(1)) = 0.3; eff1(iA(6)) = 0.12;   % cov1: B(2,1,2), A(3,2)
rfx = zeros(P, 1); rfx(iA) = 0.04; rfx(iB) = 0.12; rfx(setdiff(free, [iA(:); iB(:)])) = 0.03;
lik = zeros(P, 1); lik(iA) = 0.05; lik(iB) = 0.25; lik(setdiff(free, [iA(:); iB(:)])) = 0.05;
GCM = cell(Ns, 1);
Ep = zeros(Ns, P); F = zeros(Ns, 1);
for i = 1:Ns
    theta = mu + eff1 * cov1(i) + rfx .* randn(P, 1);
    G = randn(Nf, Nf + 4); R = G * G'; R = R ./ sqrt(diag(R) * diag(R)');
    S = diag(lik(free)) * (0.6 * eye(Nf) + 0.4 * R) * diag(lik(free));   % likelihood covariance
    y = theta(free) + chol(S)' * randn(Nf, 1);
    pP = inv(pC(free, free));
    qC = inv(inv(S) + pP); qC = (qC + qC') / 2;
    qE = pEv; qE(free) = qC * (S \ y + pP * pEv(free));
    Cp = zeros(P); Cp(free, free) = qC;
    DCM = struct();
    DCM.a = a; DCM.b = b; DCM.c = c; DCM.d = d; DCM.options = options;
    DCM.M.pE = pE; DCM.M.pC = pC;
    DCM.Ep = spm_unvec(qE, pE); DCM.Cp = sparse(Cp);
    DCM.F = -1000 - 10 * i + randn;
    DCM.name = sprintf('sub-%02d', i);
    GCM{i} = DCM;
    Ep(i, :) = qE'; F(i) = DCM.F; Cps{i} = Cp;
end

common = struct();
common.provenance = provenance();
common.first_level = struct('param_names', {names}, 'pE', pEv', 'pC_diag', pCd', 'Ep', Ep, ...
    'F', F', 'Ns', Ns);
common.first_level.Cp = Cps;
common.design = struct('X', X, 'Xnames', {{'mean', 'cov1', 'cov2'}});
common.truth = struct('mu', mu', 'effect_cov1', eff1', 'rfx_sd', rfx', 'likelihood_sd', lik');

% ------------------------------------------------------------------ PEB cases
cases = {
  'single', {'A', 'B'}, struct();
  'all',    {'A', 'B'}, struct('Q', 'all');
  'fields', {'A', 'B'}, struct('Q', 'fields', 'alpha', 2, 'beta', 8, 'hE', 1, 'hC', 1/8);
  'bonly',  {'B'},      struct()};
for k = 1:size(cases, 1) * any(strcmp(parts, 'peb'))
    [label, field, extra] = cases{k, :};
    M = extra;
    M.X = X; M.Xnames = {'mean', 'cov1', 'cov2'};
    S = common;
    S.case = label;
    S.field = field;
    S.M_options = extra;
    [S.peb, PEB] = run_peb(GCM, M, field);
    S.bmc = run_bmc(PEB);
    spm12_ref_common('write', fullfile(outdir, sprintf('peb_%s.json', label)), S);
end

% ------------------------------------------------------------------ LOO
loo_cases = {'loo', {'B'}; 'loo_ab', {'A', 'B'}};
for k = 1:size(loo_cases, 1)
    [label, field] = loo_cases{k, :};
    if ~any(strcmp(parts, label)), continue, end
    S = common;
    S.case = label;
    S.field = field;
    XL = X(:, 1:2);
    here = pwd; work = tempname; mkdir(work); cd(work);
    try
        log = evalc('[qE, qC, Q] = spm_dcm_loo(GCM, struct(''X'', XL), field);');
    catch err
        cd(here); rethrow(err);
    end
    cd(here);
    S.loo = struct('X', XL, 'qE', full(qE(:))', 'qC', full(qC(:))', 'Q', full(Q), ...
        'levels', unique(XL(:, 2))', 'log', log);
    spm12_ref_common('write', fullfile(outdir, sprintf('peb_%s.json', label)), S);
end
end


function [out, PEB] = run_peb(GCM, M, field)
here = pwd; work = tempname; mkdir(work); cd(work);       % spm_dcm_peb writes tmp.mat in pwd
try
    log = evalc('[PEB, RCM] = spm_dcm_peb(GCM, M, field);');
catch err
    cd(here); rethrow(err);
end
cd(here);
it = regexp(log, 'VL Iteration\s+(\d+)', 'tokens');
out = struct();
out.Pind = PEB.Pind(:)';
out.Pnames = PEB.Pnames(:)';
out.Ep = full(PEB.Ep);
out.Cp = full(PEB.Cp);
out.Eh = full(PEB.Eh(:))';
out.Ch = full(PEB.Ch);
out.Ce = full(PEB.Ce);
out.F = full(PEB.F);
out.M_pE = full(PEB.M.pE(:))';
out.M_pC = full(PEB.M.pC);
out.M_hE = full(PEB.M.hE(:))';
out.M_hC = full(PEB.M.hC);
out.M_Q = cellfun(@full, PEB.M.Q, 'UniformOutput', false);
out.n_iter = str2double(it{end}{1});
out.log = log;
for i = 1:numel(RCM)
    out.subject_Ep(i, :) = full(spm_vec(RCM{i}.Ep))';
    out.subject_F(i) = full(RCM{i}.F);
end
end


function out = run_bmc(PEB)
here = pwd; work = tempname; mkdir(work); cd(work);
try
    rand('state', 1); randn('state', 1);
    log = evalc('[BMA, BMR] = spm_dcm_peb_bmc(PEB);');
    [Np, Nx] = size(PEB.Ep);
    out = struct();
    out.Ep = reshape(full(spm_vec(BMA.Ep)), Np, Nx);
    out.Cp_diag = reshape(full(diag(BMA.Cp)), Np, Nx);
    out.Pp = reshape(full(spm_vec(BMA.Pp)), Np, Nx);
    out.BMR_F = full(BMR.F);
    out.BMR_P = full(BMR.P(:))';
    out.BMR_K = full(double(BMR.K));
    out.BMR_k = full(BMR.k(:))';
    out.log = log;
    % the same Bayesian model average with exact mixture moments, from SPM's own reduced
    % posteriors: the models of the last search within 8 nats of the best, each with the
    % winner's removals applied too (r = C after the search), weighted by softmax(F)
    C = out.Pp(:);
    [~, win] = max(BMR.F);
    C(BMR.k) = ~BMR.K(win, :);
    qE = spm_vec(PEB.Ep); pE = spm_vec(PEB.M.pE); pC = PEB.M.pC;
    Fm = []; Em = []; Vm = [];
    for i = find(BMR.F > max(BMR.F) - 8)
        r = C; r(BMR.k(BMR.K(i, :))) = 0;
        R = diag(r);
        [Fi, Ei, Ci] = spm_log_evidence_reduce(qE, PEB.Cp, pE, pC, R * pE, R * pC * R);
        Fm(end + 1) = Fi; Em(:, end + 1) = full(spm_vec(Ei)); Vm(:, end + 1) = full(diag(Ci));
    end
    w = exp(Fm - max(Fm)); w = w / sum(w);
    mE = Em * w(:);
    out.Ep_exact = reshape(mE, Np, Nx);
    out.Cp_diag_exact = reshape((Vm + Em.^2) * w(:) - mE.^2, Np, Nx);
    out.F_window = Fm;
catch err
    cd(here); rethrow(err);
end
cd(here);
end


function out = provenance()
out.spm_version = spm('version');
out.octave_version = OCTAVE_VERSION;
files = {'spm_dcm_peb', 'spm_dcm_peb_bmc', 'spm_dcm_bmr_all', 'spm_dcm_bma', 'spm_log_evidence', ...
         'spm_log_evidence_reduce', 'spm_dx', 'spm_dcm_loo', 'spm_dcm_ppd', 'spm_dcm_fmri_priors'};
for i = 1:numel(files)
    txt = fileread(which(files{i}));
    out.ids.(files{i}) = regexp(txt, '\$Id: [^$]*\$', 'match', 'once');
end
out.created_utc = datestr(now, 'yyyy-mm-ddTHH:MM:SS');
end

function make_dcm_reference(outdir, cases)
% Reference DCM estimates from SPM12 (r7771) for tests/dcm/test_spm12_reference.py.
%
% FORMAT make_dcm_reference(outdir, cases)
% outdir - where to write dcm_<case>.json (default: tests/data/spm12)
% cases  - cell of case names (default: {'block2', 'event3', 'selfmod2'})
%
% Each case: a deterministic one-state bilinear DCM (options.nonlinear = 0,
% two_state = 0, stochastic = 0, centre = 1; spm_dcm_estimate sets induced = 0),
% data simulated from known parameters with spm_int plus Gaussian noise and a DCT drift
% (fixed seeds), estimated by spm_dcm_estimate. The JSON keeps everything needed to
% rerun the estimation elsewhere (U.u at microtime, Y.y, X0, masks, TR, TE, delays,
% options) and SPM's outputs (Ep in spm_vec order with names, Cp, F, Eh, Ce,
% iterations, predicted y and residuals R, wall time of spm_dcm_estimate).
% Case 'block2ar1' is block2 with AR(1) noise (coefficients sim.ar1 per region) and the
% matching precision components DCM.Y.Q{i} = W_i'W_i (Prais-Winsten W_i) on region i's
% block, which spm_dcm_estimate hands to spm_nlsi_GN: the reference of the app's
% pre-whitened noise model (DCMSpec noise_ar1).
%
% Run from the repository root with SPM12 on the path, e.g.
%   octave --no-gui --no-window-system --eval \
%     "addpath('/opt/spm12'); addpath('scripts/spm12_reference'); make_dcm_reference"

if nargin < 1 || isempty(outdir), outdir = fullfile('tests', 'data', 'spm12'); end
if nargin < 2 || isempty(cases), cases = {'block2', 'event3', 'selfmod2'}; end
if ~exist(outdir, 'dir'), mkdir(outdir); end

spm12_ref_common('init');
prov = spm12_ref_common('provenance');

for ci = 1:numel(cases)
    [DCM, P, sim] = define_case(cases{ci});
    if ~isfield(sim, 'ar1'), sim.ar1 = zeros(1, DCM.n); end
    DCM = spm12_ref_common('simulate', DCM, P, sim.snr, sim.drift_sd, sim.seed, sim.ar1);
    if any(sim.ar1)
        DCM.Y.Q = ar1_precision_components(sim.ar1, DCM.v);
    end
    y_true = DCM.Y.y_true;
    DCM.Y = rmfield(DCM.Y, 'y_true');
    DCM0 = DCM;

    est = spm12_ref_common('estimate', DCM);
    E = est.DCM;
    fprintf('%s: F = %.4f, %d iterations, %.2f s\n', cases{ci}, E.F, est.n_iter, est.seconds);

    n = DCM.n;
    m = size(DCM.U.u, 2);
    names = spm12_ref_common('names', n, m);
    [pE, pC] = spm_dcm_fmri_priors(DCM.a, DCM.b, DCM.c, DCM.d, DCM.options);
    assert(numel(spm_vec(E.Ep)) == numel(names));

    S = struct();
    S.case = cases{ci};
    S.description = sim.description;
    S.provenance = prov;
    S.simulation = struct('seed', sim.seed, 'snr', sim.snr, 'drift_sd', sim.drift_sd, ...
        'Ep_true', full(spm_vec(P))', 'y_true', y_true, ...
        'note', ['Y.y = spm_int(Ep_true, M, U) (uncentred U, TE and delays as below) + noise ' ...
                 '(sd = std(y_true)/snr per region) + X0(:,2:end)*beta_drift + 100']);
    % ---- inputs (SPM layout: a(to,from), b(to,from,input), c(to,input), U.u(bin,input))
    S.inputs.a = full(DCM.a);
    S.inputs.b = full(DCM.b);
    S.inputs.c = full(DCM.c);
    S.inputs.b_layout = 'b(to,from,input), SPM DCM.b';
    S.inputs.U_u = full(DCM0.U.u);
    S.inputs.U_dt = DCM.U.dt;
    S.inputs.U_name = DCM.U.name;
    S.inputs.Y_y = DCM0.Y.y;
    S.inputs.Y_dt = DCM.Y.dt;
    S.inputs.X0 = DCM.Y.X0;
    S.inputs.TR = DCM.Y.dt;
    S.inputs.TE = DCM.TE;
    S.inputs.delays = DCM.delays(:)';
    S.inputs.n = n;
    S.inputs.v = DCM.v;
    S.inputs.region_names = DCM.Y.name;
    S.inputs.options = E.options;
    S.inputs.noise_ar1 = sim.ar1;
    % ---- outputs
    S.outputs.param_names = names;
    S.outputs.pE = full(spm_vec(pE))';
    if isstruct(pC), pC = diag(spm_vec(pC)); end   % r7771 returns pC as a (diagonal) matrix
    S.outputs.pC_diag = full(diag(pC))';
    S.outputs.Ep = full(spm_vec(E.Ep))';
    S.outputs.Cp = full(E.Cp);
    S.outputs.Cp_diag = full(diag(E.Cp))';
    S.outputs.Pp = full(spm_vec(E.Pp))';
    S.outputs.F = full(E.F);
    S.outputs.Eh = full(-log(E.Ce(:)))';   % spm_dcm_estimate keeps Ce = exp(-Eh)
    S.outputs.Ce = full(E.Ce(:))';
    S.outputs.scale = E.Y.scale;
    S.outputs.y = full(E.y);
    S.outputs.R = full(E.R);
    S.outputs.n_iter = est.n_iter;
    S.outputs.converged = est.converged;
    S.outputs.seconds = est.seconds;
    S.outputs.seconds_note = 'wall time of spm_dcm_estimate (tic/toc) under GNU Octave, one run';

    spm12_ref_common('write', fullfile(outdir, ['dcm_' cases{ci} '.json']), S);
end
end


function [DCM, P, sim] = define_case(name)
% Model, inputs and true parameters of each case.
TE = 0.04;
switch name
    case 'block2'
        % (a) 2 regions, block driving input + modulatory input, TR 2 s, 160 scans
        n = 2; TR = 2; v = 160; T = 16; dt = TR / T; bins = v * T;
        u = zeros(bins, 2);
        t = (0:bins - 1)' * dt;                  % time of each microtime bin (s)
        blk = floor(t / 20);                      % 20 s blocks
        on = mod(blk, 2) == 1;                    % task blocks alternate with rest
        u(:, 1) = on;                             % task (driving)
        u(:, 2) = on & mod(floor(blk / 2), 2) == 1;   % every other task block: modulation
        a = ones(n);
        b = zeros(n, n, 2); b(2, 1, 2) = 1;       % input 2 modulates R1 -> R2
        c = [1 0; 0 0];                           % input 1 drives R1
        delays = [TR / 2; TR / 2];                % spm_dcm_specify default
        names = {'R1', 'R2'}; unames = {'task', 'mod'};
        P.A = [-0.2 0.1; 0.4 0.1];                % A(i,i): log scale of self-inhibition
        P.B = zeros(n, n, 2); P.B(2, 1, 2) = 0.5;
        P.C = [0.6 0; 0 0];
        sim = struct('seed', 101, 'snr', 3, 'drift_sd', 0.5, 'description', ...
            '2 regions, block driving input (task -> R1) and modulatory input on R1->R2; TR 2 s, 160 scans, DCT drift');
    case 'block2ar1'
        [DCM, P, sim] = define_case('block2');
        sim.ar1 = [0.5 0.3];
        sim.seed = 111;
        sim.description = ['block2 with AR(1) noise (coefficients 0.5, 0.3) and AR(1) precision ' ...
                           'components Y.Q{i} = W_i''W_i (Prais-Winsten)'];
        return
    case 'event3'
        % (b) 3 regions, event-related driving input (zero-duration events, height 1/dt as
        % spm_get_ons), one modulatory (context) input, TR 1.5 s, 200 scans
        n = 3; TR = 1.5; v = 200; T = 16; dt = TR / T; bins = v * T;
        u = zeros(bins, 2);
        rand('state', 202);
        ons = 4;
        while true                                % jittered events every 3-6 s
            k = round(ons / dt) + 1;
            if k > bins - round(8 / dt), break, end
            u(k, 1) = 1 / dt;
            ons = ons + 3 + 3 * rand;
        end
        t = (0:bins - 1)' * dt;
        u(:, 2) = mod(floor(t / 30), 2) == 1;     % 30 s context blocks
        a = [1 1 0; 1 1 1; 0 1 1];               % chain R1 <-> R2 <-> R3
        b = zeros(n, n, 2); b(3, 2, 2) = 1;       % context modulates R2 -> R3
        c = [1 0; 0 0; 0 0];
        delays = [0.2; 0.7; 1.2];                 % slice times (s) of each region
        names = {'R1', 'R2', 'R3'}; unames = {'event', 'context'};
        P.A = [0 0.2 0; 0.5 -0.1 0.1; 0 0.3 0.1];
        P.B = zeros(n, n, 2); P.B(3, 2, 2) = 0.4;
        P.C = [0.3 0; 0 0; 0 0];
        sim = struct('seed', 303, 'snr', 3, 'drift_sd', 0.5, 'description', ...
            '3 regions (chain), event-related driving input (events of height 1/U.dt) and context input modulating R2->R3; TR 1.5 s, 200 scans, slice delays');
    case 'selfmod2'
        % (c) 2 regions, 2 driving inputs, B on a self-connection, TR 2.5 s, 120 scans
        n = 2; TR = 2.5; v = 120; T = 16; dt = TR / T; bins = v * T;
        u = zeros(bins, 2);
        t = (0:bins - 1)' * dt;
        u(:, 1) = mod(floor(t / 15), 4) == 1;     % condition 1 blocks (15 s of every 60 s)
        u(:, 2) = mod(floor(t / 15), 4) == 3;     % condition 2 blocks
        a = ones(n);
        b = zeros(n, n, 2); b(2, 2, 1) = 1;       % input 1 modulates R2's self-connection
        c = [1 0; 0 1];                           % input 1 -> R1, input 2 -> R2
        delays = [TR / 2; TR / 2];
        names = {'R1', 'R2'}; unames = {'cond1', 'cond2'};
        P.A = [0 0.1; 0.3 0];
        P.B = zeros(n, n, 2); P.B(2, 2, 1) = -0.6;
        P.C = [0.5 0; 0 0.4];
        sim = struct('seed', 404, 'snr', 3, 'drift_sd', 0.5, 'description', ...
            '2 regions, two driving inputs (cond1 -> R1, cond2 -> R2), cond1 modulates the R2 self-connection; TR 2.5 s, 120 scans');
    otherwise
        error('unknown case %s', name);
end

DCM = struct();
DCM.a = a; DCM.b = b; DCM.c = c; DCM.d = zeros(n, n, 0);
DCM.U.u = u; DCM.U.dt = dt; DCM.U.name = unames;
DCM.Y.dt = TR; DCM.Y.name = names;
DCM.Y.X0 = spm12_ref_common('dct', v, TR);
DCM.Y.Q = spm_Ce(ones(1, n) * v);
DCM.n = n; DCM.v = v;
DCM.TE = TE; DCM.delays = delays;
DCM.options = struct('nonlinear', 0, 'two_state', 0, 'stochastic', 0, 'centre', 1, ...
    'induced', 0, 'nograph', 1, 'maxit', 128, 'hidden', [], 'hE', 6, 'hC', 1/128);

% true parameters: the prior mean with A, B, C replaced (haemodynamics at the prior mean)
[pE, pC] = spm_dcm_fmri_priors(a, b, c, DCM.d, DCM.options);
Ptrue = pE;
Ptrue.A = P.A; Ptrue.B = P.B; Ptrue.C = P.C;
P = Ptrue;
end


function Q = ar1_precision_components(rho, v)
% Q{i}: region i's block of the precision of AR(1) noise with unit innovations, W'W with the
% Prais-Winsten W (first row sqrt(1 - rho^2), then x(t) - rho x(t-1)); zero elsewhere.
n = numel(rho);
Q = cell(1, n);
for i = 1:n
    W = speye(v) - rho(i) * spdiags(ones(v, 1), -1, v, v);
    W(1, 1) = sqrt(1 - rho(i)^2);
    E = sparse(i, i, 1, n, n);
    Q{i} = kron(E, W' * W);
end
end

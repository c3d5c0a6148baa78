function out = spm12_ref_common(action, varargin)
% Shared helpers of the SPM12 reference drivers (make_dcm_reference.m, make_peb_reference.m).
%
% out = spm12_ref_common('init')                 -> SPM defaults, command line, no graphics
% out = spm12_ref_common('dct', v, TR)           -> X0: DCT set of spm_filter (128 s cut-off),
%                                                   first column constant (spm_dctmtx)
% out = spm12_ref_common('simulate', DCM, P, snr, drift_sd, seed)
%                                                -> DCM with Y.y simulated from parameters P
% out = spm12_ref_common('estimate', DCM)        -> struct with the estimated DCM, wall time,
%                                                   number of VL iterations and SPM's log
% out = spm12_ref_common('names', n, m)          -> parameter names in spm_vec order
% out = spm12_ref_common('provenance')           -> SPM / Octave versions and file $Ids
% out = spm12_ref_common('write', file, S)       -> JSON file (jsonencode)
%
% Written for the ptsd_bidsapp test references; only calls public SPM12 routines.

switch action
    case 'init'
        set(0, 'DefaultFigureVisible', 'off');
        spm('defaults', 'fmri');
        spm_get_defaults('cmdline', true);
        out = spm('version');

    case 'dct'
        v  = varargin{1};
        TR = varargin{2};
        K  = fix(2 * (v * TR) / 128 + 1);          % spm_filter: HParam = 128 s
        out = spm_dctmtx(v, K);

    case 'simulate'
        [DCM, P, snr, drift_sd, seed] = deal(varargin{1:5});
        if numel(varargin) > 5, ar1 = varargin{6}; else, ar1 = zeros(1, DCM.n); end
        n  = DCM.n;
        v  = DCM.v;
        [pE, pC, x] = spm_dcm_fmri_priors(DCM.a, DCM.b, DCM.c, DCM.d, DCM.options);
        M.f  = 'spm_fx_fmri';
        M.g  = 'spm_gx_fmri';
        M.x  = x;
        M.pE = pE;
        M.m  = size(DCM.U.u, 2);
        M.n  = numel(x);
        M.l  = n;
        M.ns = v;
        M.delays = DCM.delays;
        M.TE = DCM.TE;
        % noise-free BOLD (uncentred inputs, as spm_dcm_generate)
        y  = full(spm_int(P, M, DCM.U));
        randn('state', seed);                      % Octave's legacy generator: deterministic
        noise = randn(v, n) .* (ones(v, 1) * (std(y) / snr));
        for i = 1:n                                % AR(1) noise, stationary from the first scan
            if ar1(i)
                w = noise(:, i) * sqrt(1 - ar1(i)^2);
                noise(:, i) = filter(1, [1 -ar1(i)], [noise(1, i); w(2:end)]);
            end
        end
        X0 = DCM.Y.X0;
        drift = X0(:, 2:end) * (randn(size(X0, 2) - 1, n) .* (ones(size(X0, 2) - 1, 1) * (drift_sd * std(y))));
        DCM.Y.y = y + noise + drift + 100;          % + a baseline (removed by spm_detrend)
        DCM.Y.y_true = y;
        out = DCM;

    case 'estimate'
        DCM = varargin{1};
        t0 = tic;
        log = evalc('DCM = spm_dcm_estimate(DCM);');
        seconds = toc(t0);
        tok = regexp(log, '(?:VL|EM):\([+-]\)\s*:?\s*(\d+)', 'tokens');
        if isempty(tok)
            tok = regexp(log, '\w+:\([+-]\)\s*:\s*(\d+)', 'tokens');
        end
        iters = cellfun(@(c) str2double(c{1}), tok);
        out.DCM = DCM;
        out.seconds = seconds;
        if isempty(iters), out.n_iter = NaN; else, out.n_iter = max(iters); end
        out.converged = ~isempty(strfind(log, 'convergence'));
        out.log = log;

    case 'names'
        n = varargin{1};
        m = varargin{2};
        names = {};
        for j = 1:n, for i = 1:n, names{end + 1} = sprintf('A(%d,%d)', i, j); end, end
        for k = 1:m
            for j = 1:n, for i = 1:n, names{end + 1} = sprintf('B(%d,%d,%d)', i, j, k); end, end
        end
        for k = 1:m, for i = 1:n, names{end + 1} = sprintf('C(%d,%d)', i, k); end, end
        for i = 1:n, names{end + 1} = sprintf('transit(%d)', i); end
        names{end + 1} = 'decay';
        names{end + 1} = 'epsilon';
        out = names;

    case 'provenance'
        out.spm_version = spm('version');
        out.spm_commit = getenv('SPM12_COMMIT');
        out.octave_version = OCTAVE_VERSION;
        files = {'spm_dcm_estimate', 'spm_dcm_fmri_priors', 'spm_nlsi_GN', 'spm_int', ...
                 'spm_fx_fmri', 'spm_gx_fmri', 'spm_dcm_peb', 'spm_dcm_peb_bmc', 'spm_dcm_bmr_all', ...
                 'spm_log_evidence_reduce'};
        for i = 1:numel(files)
            txt = fileread(which(files{i}));
            id = regexp(txt, '\$Id: [^$]*\$', 'match', 'once');
            out.ids.(files{i}) = id;
        end
        out.created_utc = datestr(now, 'yyyy-mm-ddTHH:MM:SS');

    case 'write'
        file = varargin{1};
        S = varargin{2};
        fid = fopen(file, 'w');
        fprintf(fid, '%s\n', jsonencode(S));
        fclose(fid);
        d = dir(file);
        fprintf('wrote %s (%.1f kB)\n', file, d.bytes / 1024);
        out = d.bytes;
end

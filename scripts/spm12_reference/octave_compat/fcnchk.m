function f = fcnchk(fun, varargin)
% Minimal stand-in for MATLAB's fcnchk, which GNU Octave (>= 4.4) no longer has and which
% SPM12's spm_bireduce / spm_int_* call. Written for the ptsd_bidsapp SPM12 reference
% drivers; only the forms SPM uses: a function name -> handle, an expression -> inline
% (with the given argument names), a handle or inline object -> unchanged.
if ischar(fun)
    name = strtrim(fun);
    if any(exist(name) == [2 3 5]) || isvarname(name)
        f = str2func(name);
    else
        args = varargin(~strcmpi(varargin, 'vectorized'));
        f = inline(name, args{:});
    end
else
    f = fun;
end

"""Methods text ("boilerplate") of a run: ``logs/CITATION.md``, ``.html`` and ``.bib``.

Generated from the resolved configuration actually used (after ``--config`` and ``--task-id``),
the run's options (seed, ``--no-dcm``) and the installed software versions, in the spirit of
fMRIPrep's citation boilerplate: a paragraph per stage that a paper's methods section can take
as it is, a list of every setting that differs from the packaged default, and the references.
"""

from __future__ import annotations

import html
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

#: Distributions whose versions the methods text and the run log report.
SOFTWARE = ("ptsd_bidsapp", "numpy", "scipy", "pandas", "nibabel", "nilearn", "nipype", "pybids",
            "scikit-learn", "numba")

#: key -> (short citation, BibTeX entry). Written for this app; DOIs from the publishers.
REFERENCES = {
    "norbury2021": ("Norbury et al. 2021", """@article{norbury2021,
  author = {Norbury, Agnes and Rutter, Sarah B. and Collins, Abigail B. and others},
  title = {Neuroimaging correlates and predictors of response to repeated-dose intravenous ketamine in {PTSD}:
           preliminary evidence},
  journal = {Neuropsychopharmacology}, year = {2021}, volume = {46}, pages = {2266--2277},
  doi = {10.1038/s41386-021-01104-4}
}"""),
    "esteban2019": ("Esteban et al. 2019", """@article{esteban2019,
  author = {Esteban, Oscar and Markiewicz, Christopher J. and Blair, Ross W. and Moodie, Craig A. and others},
  title = {{fMRIPrep}: a robust preprocessing pipeline for functional {MRI}},
  journal = {Nature Methods}, year = {2019}, volume = {16}, pages = {111--116},
  doi = {10.1038/s41592-018-0235-4}
}"""),
    "abraham2014": ("Abraham et al. 2014 (nilearn)", """@article{abraham2014,
  author = {Abraham, Alexandre and Pedregosa, Fabian and Eickenberg, Michael and Gervais, Philippe and others},
  title = {Machine learning for neuroimaging with scikit-learn},
  journal = {Frontiers in Neuroinformatics}, year = {2014}, volume = {8}, pages = {14},
  doi = {10.3389/fninf.2014.00014}
}"""),
    "gorgolewski2011": ("Gorgolewski et al. 2011 (nipype)", """@article{gorgolewski2011,
  author = {Gorgolewski, Krzysztof and Burns, Christopher D. and Madison, Cindee and Clark, Dav and
            Halchenko, Yaroslav O. and Waskom, Michael L. and Ghosh, Satrajit S.},
  title = {Nipype: a flexible, lightweight and extensible neuroimaging data processing framework in {Python}},
  journal = {Frontiers in Neuroinformatics}, year = {2011}, volume = {5}, pages = {13},
  doi = {10.3389/fninf.2011.00013}
}"""),
    "yarkoni2019": ("Yarkoni et al. 2019 (pybids)", """@article{yarkoni2019,
  author = {Yarkoni, Tal and Markiewicz, Christopher J. and de la Vega, Alejandro and Gorgolewski, Krzysztof J.
            and others},
  title = {{PyBIDS}: Python tools for {BIDS} datasets},
  journal = {Journal of Open Source Software}, year = {2019}, volume = {4}, number = {40}, pages = {1294},
  doi = {10.21105/joss.01294}
}"""),
    "mclaren2012": ("McLaren et al. 2012", """@article{mclaren2012,
  author = {McLaren, Donald G. and Ries, Michele L. and Xu, Guofan and Johnson, Sterling C.},
  title = {A generalized form of context-dependent psychophysiological interactions ({gPPI}): a comparison to
           standard approaches},
  journal = {NeuroImage}, year = {2012}, volume = {61}, number = {4}, pages = {1277--1286},
  doi = {10.1016/j.neuroimage.2012.03.068}
}"""),
    "friston2003": ("Friston, Harrison & Penny 2003", """@article{friston2003,
  author = {Friston, Karl J. and Harrison, Lee and Penny, Will},
  title = {Dynamic causal modelling},
  journal = {NeuroImage}, year = {2003}, volume = {19}, number = {4}, pages = {1273--1302},
  doi = {10.1016/S1053-8119(03)00202-7}
}"""),
    "friston2016": ("Friston et al. 2016", """@article{friston2016,
  author = {Friston, Karl J. and Litvak, Vladimir and Oswal, Ashwini and others},
  title = {Bayesian model reduction and empirical {Bayes} for group ({DCM}) studies},
  journal = {NeuroImage}, year = {2016}, volume = {128}, pages = {413--431},
  doi = {10.1016/j.neuroimage.2015.11.015}
}"""),
    "zeidman2019": ("Zeidman et al. 2019", """@article{zeidman2019,
  author = {Zeidman, Peter and Jafarian, Amirhossein and Seghier, Mohamed L. and Litvak, Vladimir and
            Cagnan, Hayriye and Price, Cathy J. and Friston, Karl J.},
  title = {A guide to group effective connectivity analysis, part 2: second level analysis with {PEB}},
  journal = {NeuroImage}, year = {2019}, volume = {200}, pages = {12--25},
  doi = {10.1016/j.neuroimage.2019.06.032}
}"""),
    "friedman2010": ("Friedman, Hastie & Tibshirani 2010", """@article{friedman2010,
  author = {Friedman, Jerome and Hastie, Trevor and Tibshirani, Robert},
  title = {Regularization paths for generalized linear models via coordinate descent},
  journal = {Journal of Statistical Software}, year = {2010}, volume = {33}, number = {1}, pages = {1--22},
  doi = {10.18637/jss.v033.i01}
}"""),
}


def software_versions() -> dict[str, str]:
    """Installed versions of the software the results depend on (``"not installed"`` when absent)."""
    versions = {"python": platform.python_version()}
    for dist in SOFTWARE:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def config_differences(config: Mapping, default: Mapping, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every setting of ``config`` that differs from ``default`` as (dotted key, value, default value).

    A key present on one side only has ``None`` on the other.
    """
    out = []
    for key in list(default) + [k for k in config if k not in default]:
        name = f"{prefix}{key}"
        mine, theirs = config.get(key), default.get(key)
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            out.extend(config_differences(mine, theirs, name + "."))
        elif mine != theirs:
            out.append((name, mine, theirs))
    return out


def _or(value, fallback: str):
    """``value``, or the words for its default when it is ``None``."""
    return fallback if value is None else value


def _cite(key: str) -> str:
    return f"[{REFERENCES[key][0]}]"


def _join(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


def _denoising_sentence(name: str, strategy: Mapping) -> str:
    parts = [f"'{name}': load_confounds strategy {_join(strategy.get('strategy', []))}"]
    if "motion" in strategy.get("strategy", []):
        parts.append(f"motion={strategy.get('motion')}")
    if "wm_csf" in strategy.get("strategy", []):
        parts.append(f"wm_csf={strategy.get('wm_csf')}")
    if "scrub" in strategy.get("strategy", []):
        parts.append(f"scrubbing at FD > {strategy.get('fd_threshold')} mm (segments < {strategy.get('scrub')} "
                     "volumes removed)")
    if strategy.get("low_pass") or strategy.get("high_pass"):
        parts.append(f"band-pass {strategy.get('high_pass')}–{strategy.get('low_pass')} Hz")
    return ", ".join(parts)


def methods_blocks(config: Mapping, default: Mapping, versions: Mapping[str, str], options: Mapping) -> list:
    """The methods text as blocks: ``("h", title)``, ``("p", text)``, ``("ul", [items])``.

    Parameters
    ----------
    config, default : mapping
        The resolved configuration used and the packaged default.
    versions : mapping
        Software -> version (:func:`software_versions`).
    options : mapping
        Run options that change results: ``seed``, ``task_id`` (list or None), ``no_dcm``.
    """
    tasks = config["tasks"]
    v = versions
    blocks: list = [("h", "Methods (generated by ptsd_bidsapp)")]
    task_text = "; ".join(
        f"{t} ({spec['design']} design" + (f", conditions {_join(spec['conditions'])}" if spec["conditions"] else "")
        + (f", contrasts {_join(f'{n} = {e}' for n, e in spec['contrasts'].items())}" if spec["contrasts"] else "")
        + ")" for t, spec in tasks.items())
    blocks.append(("p", (
        f"Region-of-interest analyses were performed with ptsd_bidsapp {v['ptsd_bidsapp']} (Python {v['python']}), "
        f"following the design of {_cite('norbury2021')}, on BOLD series preprocessed with fMRIPrep "
        f"{_cite('esteban2019')} in {config['space']} space. Inputs were queried with PyBIDS {v['pybids']} "
        f"{_cite('yarkoni2019')} and the participant-level steps ran as a Nipype {v['nipype']} workflow "
        f"{_cite('gorgolewski2011')}; signal processing used nilearn {v['nilearn']} {_cite('abraham2014')}, "
        f"NiBabel {v['nibabel']}, NumPy {v['numpy']}, SciPy {v['scipy']} and pandas {v['pandas']}. "
        f"Sessions {config['sessions']['pre']} (pre) and {config['sessions']['post']} (post) were analysed; "
        f"tasks: {task_text}."
        + (f" Only the tasks {_join(options['task_id'])} were processed (--task-id)." if options.get("task_id")
           else ""))))
    atlas = config["atlas"]
    roi_source = (f"a user-supplied segmentation ({atlas['dseg']})" if atlas.get("dseg")
                  else f"the packaged atlas-{atlas['name']} ROI set (dACC, rACC, vmPFC, anterior hippocampus, "
                       "anterior insula, amygdala; from the Harvard–Oxford atlas with documented anatomical cuts)")
    qc = config["motion_qc"]
    blocks.append(("p", (
        f"ROIs were taken from {roi_source}"
        + (", split into left and right hemispheres" if atlas.get("split_hemispheres") else "")
        + f", resampled (nearest neighbour) to each BOLD grid and restricted to the brain mask; ROIs with less "
        f"than {atlas['min_coverage']:.0%} of their voxels inside the mask were set to n/a. Confounds were "
        f"selected from the fMRIPrep confounds with nilearn's load_confounds: "
        + "; ".join(_denoising_sentence(n, s) for n, s in config["denoising"].items()
                    if any(spec["denoising"] == n for spec in tasks.values()))
        + f". Runs with mean framewise displacement above {qc['max_mean_fd']} mm or more than "
        f"{qc['max_percent_censored']}% of volumes above {qc['fd_threshold']} mm were excluded.")))
    glm, gppi = config["glm"], config["gppi"]
    blocks.append(("p", (
        f"Activation: a first-level GLM of the ROI mean signals in percent signal change (nilearn design matrices, "
        f"HRF model '{glm['hrf_model']}', noise model {glm['noise_model']}, drift model {glm['drift_model']}). "
        f"Task connectivity: generalised PPI {_cite('mclaren2012')} with the seed signal deconvolved to neural "
        f"level (method '{gppi['method']}', {gppi['fmri_t']} microtime bins per TR, reference bin "
        f"{_or(gppi['fmri_t0'], 'the slice-time reference')}, deconvolution noise "
        f"variance {_or(gppi['deconvolution_precision'], 'the method default')}), one interaction regressor per condition, seeds {_join(gppi['seeds'])}; the symmetrised measure is the "
        f"mean of both directions. Task-free connectivity: Pearson correlation of the denoised ROI signals, "
        f"Fisher z transformed.")))
    dcm, peb = config["dcm"], config["peb"]
    if dcm.get("enabled"):
        noise = ("AR(1) noise per region (pre-whitened)" if dcm["noise"] == "ar1" else "white noise (SPM12's model)")
        blocks.append(("p", (
            f"Effective connectivity: a deterministic bilinear DCM for fMRI {_cite('friston2003')} of "
            f"{_join(dcm['regions'])} in the {dcm['task']} task per session, with SPM12 (r7771) priors and "
            f"hemodynamic model, inputs {_join(f'{k} ({_join(c)})' for k, c in dcm['inputs'].items())}, "
            f"modulations B {dict(dcm['b'])}, driving inputs C {dict(dcm['c'])}, echo time {dcm['te']} s, "
            f"{'mean-centred' if dcm['centre_inputs'] else 'uncentred'} inputs at {dcm['microtime_bins']} bins "
            f"per TR, fitted by variational Laplace (at most {dcm['max_iterations']} iterations, tolerance "
            f"{dcm['tolerance']} nats) with {noise} and a noise hyperprior of mean {dcm['hE']} and variance "
            f"{dcm['hC']} (log precision); fits explaining at most {dcm['min_explained_variance']}% of the variance "
            f"were flagged as poor. Group effects: parametric empirical Bayes {_cite('friston2016')} "
            f"{_cite('zeidman2019')} over the {_join(peb['fields'])} parameters"
            f"{' between regions' if peb['between_only'] else ''} with covariates {_join(peb['covariates'])}, "
            f"random effects '{peb['random_effects']}', hE {peb['hE']}, hC {peb['hC']}, alpha {peb['alpha']}, "
            f"beta {peb['beta']}; Bayesian model reduction and averaging; {peb['n_permutations']} re-randomisations "
            f"per covariate. An effect was called a finding when its posterior probability exceeded "
            f"{peb['pp_threshold']} and its re-randomisation p ({peb['finding_p']}, family '{peb['finding_family']}') "
            f"was below {peb['finding_alpha']}; poor fits were {peb['poor_fits']}d. "
            f"Improvement was predicted from baseline parameters by leave-one-out PEB.")))
    else:
        why = " (--no-dcm)" if options.get("no_dcm") else ""
        blocks.append(("p", f"No DCM was estimated{why}."))
    en, clinical = config["elastic_net"], config["clinical"]
    lmr = en["lambda_min_ratio"] if en["lambda_min_ratio"] is not None else "glmnet's default"
    blocks.append(("p", (
        f"Group level: change scores (post − pre) of the a-priori measures {_join(config['measures'])}; "
        f"improvement = {clinical['outcome']} pre − post, change in {clinical['covariate']} as covariate. "
        f"Elastic-net regression equivalent to R glmnet {_cite('friedman2010')} (alpha {en['alpha']}, "
        f"{en['n_lambda']} lambdas, lambda_min_ratio {lmr}, standardised predictors) with leave-one-out "
        f"cross-validation (lambda at the minimum error), models {_join(en['models'])}; nested cross-validation "
        f"(leave-one-out up to {en['nested_max_loo']} subjects, else {en['nested_k_folds']}-fold), "
        f"{en['n_permutations']} permutations and {en['n_bootstrap']} bootstrap resamples; random seed "
        f"{options.get('seed', 0)}.")))
    changed = config_differences(config, default)
    blocks.append(("h", "Settings that differ from the packaged default"))
    blocks.append(("ul", [f"{key}: {value!r} (default {old!r})" for key, value, old in changed]
                   or ["none: the packaged default configuration was used"]))
    blocks.append(("h", "Software versions"))
    blocks.append(("ul", [f"{name} {version}" for name, version in versions.items()]))
    blocks.append(("h", "References"))
    used = [k for k in REFERENCES if k not in ("friston2003", "friston2016", "zeidman2019") or dcm.get("enabled")]
    blocks.append(("ul", [f"[{REFERENCES[k][0]}] {_bib_line(REFERENCES[k][1])}" for k in used]))
    return blocks


def _bib_line(entry: str) -> str:
    """A one-line reference from a BibTeX entry of :data:`REFERENCES`."""
    fields = {}
    for name, value in re.findall(r"(\w+) = \{((?:[^{}]|\{[^{}]*\})*)\}", entry):
        fields[name] = " ".join(value.replace("{", "").replace("}", "").split())
    return (f"{fields.get('author', '')} ({fields.get('year', '')}). {fields.get('title', '')}. "
            f"{fields.get('journal', '')} {fields.get('volume', '')}:{fields.get('pages', '').replace('--', '–')}. "
            f"doi:{fields.get('doi', '')}")


def render_markdown(blocks: list) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h":
            out.append(f"## {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        else:
            out.append("\n".join(f"- {item}" for item in content) + "\n")
    return "\n".join(out)


def render_html(blocks: list) -> str:
    body = []
    for kind, content in blocks:
        if kind == "h":
            body.append(f"<h2>{html.escape(content)}</h2>")
        elif kind == "p":
            body.append(f"<p>{html.escape(content)}</p>")
        else:
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in content) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ptsd_bidsapp methods</title>"
            "</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def render_bibtex(config: Mapping) -> str:
    keys = [k for k in REFERENCES if k not in ("friston2003", "friston2016", "zeidman2019")
            or config["dcm"].get("enabled")]
    return "\n\n".join(REFERENCES[k][1] for k in keys) + "\n"


def citation_files(config: Mapping, default: Mapping, options: Mapping,
                   versions: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{file name: content}`` of ``CITATION.md``, ``CITATION.html`` and ``CITATION.bib``."""
    blocks = methods_blocks(config, default, versions or software_versions(), options)
    return {"CITATION.md": render_markdown(blocks), "CITATION.html": render_html(blocks),
            "CITATION.bib": render_bibtex(config)}


def write_citation_files(log_dir: Path, files: Mapping[str, str], writer) -> list[Path]:
    """Write :func:`citation_files` into ``log_dir`` with ``writer(path, text)`` (an atomic writer)."""
    paths = []
    for name, text in files.items():
        path = Path(log_dir) / name
        writer(path, text)
        paths.append(path)
    return paths

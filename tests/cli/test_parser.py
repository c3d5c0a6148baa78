"""CLI parsing and validation (SPEC §9): every option, typed, all problems reported together."""

import re

import pytest

from ptsd_bidsapp import errors
from ptsd_bidsapp.cli.parser import UsageError, build_parser, parse_args
from ptsd_bidsapp.cli.run import main

SPEC_OPTIONS = [
    "--participant-label", "--participant_label", "--session-label", "--derivatives", "--config",
    "--bids-filter-file", "--work-dir", "-w", "--nprocs", "--mem-gb", "--skip-bids-validation", "--seed",
    "--no-dcm", "--no-reports", "--plugin", "--plugin-args", "--version",
]


def test_help_lists_every_spec_option(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in SPEC_OPTIONS:
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", text), option


def test_participant_label_both_spellings_and_prefix_stripped(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    for flag in ("--participant-label", "--participant_label"):
        args = parse_args([str(bids), str(tmp_path / "out"), "participant", flag, "sub-01", "02"])
        assert args.participant_label == ["01", "02"]
    args = parse_args([str(bids), str(tmp_path / "out"), "participant", "--session-label", "ses-pre"])
    assert args.session_label == ["pre"]


def test_all_problems_reported_together(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    with pytest.raises(UsageError) as exc:
        parse_args([str(bids), str(bids / "out"), "participant", "--nprocs", "0", "--plugin", "Nope",
                    "--config", str(tmp_path / "missing.yml"), "--mem-gb", "-1"])
    problems = exc.value.problems
    assert exc.value.exit_code == errors.USAGE
    assert len(problems) == 5, problems
    joined = " ".join(problems)
    for needle in ("inside bids_dir", "--nprocs", "--plugin", "missing.yml", "--mem-gb"):
        assert needle in joined


def test_unknown_analysis_level_alone_exits_17(tmp_path, capsys):
    (tmp_path / "bids").mkdir()
    assert main([str(tmp_path / "bids"), str(tmp_path / "out"), "subject"]) == errors.UNKNOWN_LEVEL
    assert "analysis_level" in capsys.readouterr().err


def test_bad_type_exits_64(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "o"), "participant", "--nprocs", "two"]) == errors.USAGE
    assert "--nprocs" in capsys.readouterr().err


def test_missing_bids_dir_exits_66(tmp_path, capsys):
    code = main([str(tmp_path / "nothere"), str(tmp_path / "out"), "participant", "--skip-bids-validation"])
    assert code == errors.NOINPUT
    assert "nothere" in capsys.readouterr().err


def test_plugin_args_json(tmp_path):
    (tmp_path / "bids").mkdir()
    args = parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--plugin", "SLURM",
                       "--plugin-args", '{"sbatch_args": "-p normal"}'])
    assert args.plugin_settings == {"sbatch_args": "-p normal"}
    with pytest.raises(UsageError):
        parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--plugin-args", "{bad"])


def test_print_config_shows_resolved_config(tmp_path, capsys):
    user = tmp_path / "c.yml"
    user.write_text("elastic_net:\n  alpha: 0.9\n")
    (tmp_path / "bids").mkdir()
    assert main([str(tmp_path / "bids"), str(tmp_path / "out"), "group", "--config", str(user), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "alpha: 0.9" in out and "fearfulMinusNeutral" in out


def test_omp_nthreads_and_low_mem(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    args = parse_args([str(bids), str(tmp_path / "out"), "participant"])
    assert args.omp_nthreads is None and args.low_mem is False
    args = parse_args([str(bids), str(tmp_path / "out"), "participant", "--omp-nthreads", "3", "--low-mem"])
    assert args.omp_nthreads == 3 and args.low_mem is True
    assert parse_args([str(bids), str(tmp_path / "out"), "participant", "--omp_nthreads", "2"]).omp_nthreads == 2
    with pytest.raises(UsageError) as exc:
        parse_args([str(bids), str(tmp_path / "out"), "participant", "--omp-nthreads", "0"])
    assert exc.value.exit_code == errors.USAGE and "--omp-nthreads" in " ".join(exc.value.problems)

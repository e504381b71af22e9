import subprocess
import sys

from node import __version__
from node.cli import main


def test_version_flag_prints_version(capsys):
    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: synaptic-mesh" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "synaptic-mesh" in result.stdout


def test_log_flags_are_accepted_after_the_subcommand():
    from node.cli import build_parser

    parser = build_parser()
    after = parser.parse_args(
        ["status", "--log-format", "json", "--log-level", "DEBUG"]
    )
    assert (after.log_format, after.log_level) == ("json", "DEBUG")
    before = parser.parse_args(["--log-format", "json", "status"])
    assert (before.log_format, before.log_level) == ("json", "INFO")
    nested = parser.parse_args(["dag", "verify", "--log-level", "ERROR"])
    assert nested.log_level == "ERROR"
    assert parser.parse_args(["status"]).log_format == "text"


def test_closed_stdout_pipe_exits_quietly(tmp_path):
    import numpy as np

    import neural

    rows = np.zeros((20000, 2))
    data = tmp_path / "big.data"
    neural.write_data(neural.TrainingData(rows, np.zeros((20000, 1))), data)
    net = tmp_path / "net.net"
    neural.save(neural.create_standard([2, 3, 1], np.random.default_rng(1)), net)

    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "neural", "run", str(net)]
        + ["--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The reader goes away before the command prints, as `| head -0` would.
    proc.stdout.close()
    stderr = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert code == 141


def test_neural_and_simulate_errors_use_the_common_prefix(tmp_path, capsys):
    assert main(["neural", "run", str(tmp_path / "missing.net"), "--input", "1"]) == 1
    assert capsys.readouterr().err.startswith("synaptic-mesh: error: ")
    assert main(["simulate", "--nodes", "0"]) == 2
    assert capsys.readouterr().err.startswith("synaptic-mesh: error: ")


def test_init_and_status_on_a_file_path_give_clear_errors(tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("not a directory\n")
    assert main(["init", "--data-dir", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("synaptic-mesh: error: ")
    assert "is a file, not a directory" in err
    assert main(["init", "--data-dir", str(path / "child")]) == 1
    err = capsys.readouterr().err
    assert "cannot create data directory" in err
    assert main(["status", "--data-dir", str(path)]) == 1
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err
    assert "does not exist" not in err


def _all_parsers(parser, prefix=()):
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*prefix, name))


def test_every_option_has_help_without_doubled_percent():
    from node.cli import build_parser

    missing = []
    for path, parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")
        assert "%%" not in parser.format_help(), path
    assert missing == []

"""`--version` on both CLIs, `fleetmeter completion bash|zsh` run by the real shells, and the TLS files a caller
takes from FLEETMETER_TLS_* (over a real TLS controller: tests/integration/test_tls.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from fleetmeter import _net
from fleetmeter._version import __version__
from fleetmeter.cli import build_parser
from fleetmeter.completion import command_specs, completion_script


@pytest.mark.parametrize("module, prog", [("fleetmeter.cli", "fleetmeter"),
                                          ("fleetmeter.agent.cli", "fleetmeter-agent")])
def test_version(module, prog):
    run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.strip()) == (0, f"{prog} {__version__}")


def test_specs_walk_every_subcommand():
    """Fails if a command path, its flags or a flag's choices are missing from what the script is built from."""
    specs = dict(command_specs(build_parser()))
    assert {"", "sweep", "sweep submit", "agents token create", "results", "completion"} <= set(specs)
    subs, flags, valued, choices = specs["results"]
    assert subs == [] and {"--format", "--out", "--json", "--tls-ca"} <= set(flags)
    assert "--format" in valued and "--json" not in valued
    assert choices["--format"] == ["table", "csv", "json", "parquet"]
    assert "sweep" in specs[""][0] and "--version" in specs[""][1]


BASH_DRIVER = """
source "$1"
complete_words() {
    COMP_WORDS=("${@:2}"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    _fleetmeter
    echo "${COMPREPLY[*]}"
}
complete_words x fleetmeter sw
complete_words x fleetmeter sweep ""
complete_words x fleetmeter -v results --fo
complete_words x fleetmeter results --sweep sw-1 --format ""
complete_words x fleetmeter predict --target e
complete -p fleetmeter
"""


def _checked_script(tmp_path, shell: str):
    """(the shell, the completion script written for it), after ``SHELL -n`` found its syntax valid."""
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"no {shell} here")
    script = tmp_path / f"fleetmeter.{shell}"
    script.write_text(completion_script(build_parser(), shell))
    checked = subprocess.run([exe, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    return exe, script


def test_bash_script_is_valid_and_completes(tmp_path):
    bash, script = _checked_script(tmp_path, "bash")
    driver = tmp_path / "driver.bash"
    driver.write_text(BASH_DRIVER)
    run = subprocess.run([bash, str(driver), str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "sweep",
        " ".join(dict(command_specs(build_parser()))["sweep"][0]),  # submit status ... (every subcommand)
        "--format",
        "table csv json parquet",
        "energy_mj",
        "complete -o default -F _fleetmeter fleetmeter",
    ]


def test_zsh_script_is_valid_and_registers(tmp_path):
    zsh, script = _checked_script(tmp_path, "zsh")
    # sourced after compinit, as a ~/.zshrc does, it registers the completion through bashcompinit
    run = subprocess.run([zsh, "-c", f"autoload -U compinit && compinit -u && source {script} && "
                                     "print -r -- ${_comps[fleetmeter]}"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr


def test_completion_command_prints_the_script(capsys):
    from fleetmeter.cli import main

    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == completion_script(build_parser(), "bash")


# ------------------------------------------------------------------ TLS files from the environment
@pytest.fixture
def pem(tmp_path):
    files = {}
    for name in ("ca", "cert", "key", "other"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text("-----BEGIN CERTIFICATE-----\n")
    return {k: str(v) for k, v in files.items()}


def test_caller_tls_from_env_and_flags(monkeypatch, pem):
    for variable in _net.TLS_ENV.values():
        monkeypatch.delenv(variable, raising=False)
    assert _net.caller_tls() == _net.TlsFiles() and not _net.caller_tls().enabled
    monkeypatch.setenv("FLEETMETER_TLS_CA", pem["ca"])
    assert _net.caller_tls() == _net.TlsFiles(ca=pem["ca"])
    monkeypatch.setenv("FLEETMETER_TLS_CERT", pem["cert"])
    monkeypatch.setenv("FLEETMETER_TLS_KEY", pem["key"])
    assert _net.caller_tls() == _net.TlsFiles(ca=pem["ca"], cert=pem["cert"], key=pem["key"])
    # a flag wins over its variable, one by one
    assert _net.caller_tls(ca=pem["other"]) == _net.TlsFiles(ca=pem["other"], cert=pem["cert"], key=pem["key"])


def test_caller_tls_errors_name_the_variable(monkeypatch, pem, tmp_path):
    for variable in _net.TLS_ENV.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FLEETMETER_TLS_CA", str(tmp_path / "gone.pem"))
    with pytest.raises(ValueError, match=r"gone.pem \(from \$FLEETMETER_TLS_CA\)"):
        _net.caller_tls()
    monkeypatch.setenv("FLEETMETER_TLS_CA", pem["ca"])
    monkeypatch.setenv("FLEETMETER_TLS_CERT", pem["cert"])
    with pytest.raises(ValueError, match=r"FLEETMETER_TLS_KEY"):
        _net.caller_tls()


def test_cli_reports_a_bad_tls_variable(monkeypatch, tmp_path, capsys):
    """Fails if a caller command ignores FLEETMETER_TLS_CA or shows a traceback for a missing file."""
    from fleetmeter.cli import main

    monkeypatch.setenv("FLEETMETER_TLS_CA", str(tmp_path / "gone.pem"))
    assert main(["devices", "--controller", "127.0.0.1:1"]) == 2
    assert "$FLEETMETER_TLS_CA" in capsys.readouterr().err

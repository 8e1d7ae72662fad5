"""dra_hami.logs: --log-level debug shows our debug lines, not celpy's, urllib3's or the kubernetes client's."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dra_hami import logs


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv(logs.THIRD_PARTY_ENV, raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in logs.THIRD_PARTY}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def _emit(capsys) -> str:
    for name in ("dra_hami.webhook.admission", "celpy.evaluation", "urllib3.connectionpool", "kubernetes.client.rest"):
        logging.getLogger(name).debug("debug from %s", name)
        logging.getLogger(name).warning("warning from %s", name)
    return capsys.readouterr().err


def test_debug_level_keeps_libraries_at_warning(capsys):
    logs.setup("debug", "text")
    err = _emit(capsys)
    assert "debug from dra_hami.webhook.admission" in err
    for name in ("celpy.evaluation", "urllib3.connectionpool", "kubernetes.client.rest"):
        assert f"debug from {name}" not in err
        assert f"warning from {name}" in err


def test_an_explicit_option_or_the_environment_lets_them_through(capsys, monkeypatch):
    logs.setup("debug", "json", third_party="debug")
    assert "debug from celpy.evaluation" in _emit(capsys)
    monkeypatch.setenv(logs.THIRD_PARTY_ENV, "debug")
    logs.setup("debug", "text")
    assert "debug from urllib3.connectionpool" in _emit(capsys)
    monkeypatch.setenv(logs.THIRD_PARTY_ENV, "info")
    logs.setup("debug", "text", third_party="warning")  # the argument wins over the environment
    assert "debug from urllib3.connectionpool" not in _emit(capsys)


def test_libraries_never_log_below_the_chosen_level(capsys):
    logs.setup("error", "text", third_party="debug")
    err = _emit(capsys)
    assert "warning from" not in err


def test_a_bad_level_names_the_variable(monkeypatch):
    monkeypatch.setenv(logs.THIRD_PARTY_ENV, "loud")
    with pytest.raises(ValueError, match=r"DRA_HAMI_THIRD_PARTY_LOG_LEVEL='loud' is not a log level: use one of"):
        logs.setup("info")


def test_real_cel_evaluation_at_debug_writes_no_celpy_lines():
    """celpy itself, in a fresh process: the flood this module exists to stop."""
    code = (
        "import celpy; from dra_hami import logs; logs.setup('debug');"
        "env = celpy.Environment(); prog = env.program(env.compile('[1, 2].exists(x, x > 1)'));"
        "print(prog.evaluate({}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"
    assert "celpy" not in done.stderr, done.stderr[:500]
    loud = code.replace("logs.setup('debug')", "logs.setup('debug', third_party='debug')")
    flood = subprocess.run([sys.executable, "-c", loud], capture_output=True, text=True, timeout=60, check=True)
    assert "celpy" in flood.stderr  # the check above could fail: celpy does log at DEBUG

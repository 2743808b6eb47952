"""torch_threads: a number, torch's default, or `auto` (the cores not already busy)."""
from __future__ import annotations

import os

import psutil
import pytest
from support import compose_config

from federation.settings import ConfigError, check_training_config
from federation.threads import resolve_threads


def test_a_number_or_null_passes_through():
    assert resolve_threads(None) is None
    assert resolve_threads(3) == 3


@pytest.mark.parametrize("percent, expected", [(0.0, 4), (30.0, 3), (65.0, 1), (100.0, 1)])
def test_auto_leaves_the_busy_cores_to_whoever_keeps_them_busy(monkeypatch, percent, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: percent)
    assert resolve_threads("auto") == expected


@pytest.mark.parametrize("limit, expected", [("2", 2), ("1", 1), ("8", 4), ("", 4), ("0", 4), ("two", 4)])
def test_auto_keeps_to_the_openmp_limit_a_parallel_launcher_sets(monkeypatch, limit, expected):
    """A joblib worker of a 2-job sweep on 4 idle cores gets OMP_NUM_THREADS=2; a job alone, or a value that is
    not a positive number, leaves auto to the idle cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", limit)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 0.0)
    assert resolve_threads("auto") == expected


def test_the_config_check_accepts_auto_and_refuses_other_words_and_zero():
    check_training_config(compose_config(["torch_threads=auto"]), paths=False)
    for bad in ("fast", "0"):
        with pytest.raises(ConfigError, match="torch_threads"):
            check_training_config(compose_config([f"torch_threads={bad}"]), paths=False)

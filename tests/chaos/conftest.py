"""Rounds of the chaos test: `--chaos-rounds N` (when tests/chaos is on the command line) or
RECIP_CHAOS_ROUNDS=N; default 1 per backend (CI). The acceptance run uses 20."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-rounds", type=int, default=None,
                     help="rounds of the chaos test per backend (default $RECIP_CHAOS_ROUNDS or 1)")


def chaos_rounds(config: pytest.Config) -> int:
    given = config.getoption("--chaos-rounds", default=None)
    if given is None:
        given = int(os.environ.get("RECIP_CHAOS_ROUNDS", "1"))
    return max(1, int(given))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chaos_round" in metafunc.fixturenames:
        metafunc.parametrize("chaos_round", range(chaos_rounds(metafunc.config)))

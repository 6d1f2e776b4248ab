"""The trainer uses the thread count its worker slot gave it ($RECIP_THREADS) and records it."""

from __future__ import annotations

import pytest
import torch

from workers.train.artifacts import THREADS_ENV
from workers.train.device import cpu_threads, setup_device


def test_recip_threads_sets_torch_threads_and_is_recorded(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    dev = setup_device("cpu")
    assert torch.get_num_threads() == 2
    assert dev.precision["threads"] == 2 and dev.precision["threads_from"] == THREADS_ENV
    monkeypatch.setenv(THREADS_ENV, "1")
    assert setup_device("cpu").precision["threads"] == 1 == torch.get_num_threads()


def test_without_recip_threads_torch_keeps_its_count(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    dev = setup_device("cpu")
    assert dev.precision["threads"] == 1 and dev.precision["threads_from"] == "torch default"


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_bad_recip_threads_names_the_variable(raw):
    with pytest.raises(ValueError, match=rf"\${THREADS_ENV}='{raw}'"):
        cpu_threads({THREADS_ENV: raw})


def test_blank_recip_threads_is_unset():
    assert cpu_threads({THREADS_ENV: " "}) is None and cpu_threads({}) is None

"""workers.outcome.classify: the verdict from result.json, the exit code and why the worker
ended the process, without a loop or a database."""

from __future__ import annotations

import pytest

from orchestrator.core.states import AttemptState, FailureKind
from workers.outcome import STOP, TIMEOUT, Facts, Verdict, classify


def test_success_needs_both_the_status_and_exit_zero() -> None:
    assert classify(Facts({"status": "succeeded"}, 0)) == Verdict(AttemptState.SUCCEEDED)
    crashed = classify(Facts({"status": "succeeded"}, 1))
    assert (crashed.state, crashed.kind) == (AttemptState.FAILED, FailureKind.CRASHED)


@pytest.mark.parametrize(("status", "kind"), [("failed", FailureKind.EXCEPTION),
                                              ("oom", FailureKind.OOM),
                                              ("diverged", FailureKind.DIVERGED)])
def test_trainer_reported_failures_keep_its_type_and_message(status: str,
                                                             kind: FailureKind) -> None:
    v = classify(Facts({"status": status, "error_type": "E", "error_message": "m"}, 1))
    assert v == Verdict(AttemptState.FAILED, kind, "E", "m")
    bare = classify(Facts({"status": status}, 1))
    assert (bare.error_type, bare.message) == (status, f"the trainer reported {status}")


def test_a_reported_failure_wins_over_the_timeout() -> None:
    v = classify(Facts({"status": "oom"}, 1, why=TIMEOUT, budget_s=10))
    assert v.kind is FailureKind.OOM


def test_timeout_names_budget_and_grace() -> None:
    v = classify(Facts(None, -15, why=TIMEOUT, budget_s=60, grace_s=5))
    assert (v.state, v.error_type) == (AttemptState.TIMED_OUT, "Timeout")
    assert v.message == "no result after budget 60s + grace 5s: terminated (exit -15)"


@pytest.mark.parametrize("facts", [Facts(None, -15, why=STOP), Facts(None, 3),
                                   Facts({"status": "interrupted"}, 0)])
def test_a_stop_gives_the_attempt_back(facts: Facts) -> None:
    v = classify(facts)
    assert v.requeue and v.state is AttemptState.QUEUED and v.kind is None


def test_crash_messages_name_the_signal_and_the_last_log_line() -> None:
    v = classify(Facts(None, -9, log_tail="Killed"))
    assert (v.state, v.kind, v.error_type) == (AttemptState.FAILED, FailureKind.CRASHED,
                                               "Crashed")
    assert v.message == ("process killed by SIGKILL (out of host memory?) without "
                         "result.json; last log line: Killed")
    assert classify(Facts(None, 2)).message == "process exited 2 without result.json"
    assert "x" * 1900 in (classify(Facts(None, 1, log_tail="x" * 5000)).message or "")
    assert len(classify(Facts(None, 1, log_tail="x" * 5000)).message or "") == 2000

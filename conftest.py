"""Lesson run times: with P2P_RECORD_TIMINGS=1, a test run that executes lessons writes how long each took
(every cell's setup + call, summed, as nbval ran it) into lessons/timings.json, which the lessons' openings
read (p2p_lib.results.lesson_run_time). Off by default, so that `make test` leaves the checkout as it was:

    P2P_RECORD_TIMINGS=1 make test                       # every lesson, on this machine
    P2P_RECORD_TIMINGS=1 .venv/bin/pytest lessons/07_evaluation_inference.ipynb   # one lesson; the others are kept
"""
import os
from collections import defaultdict
from pathlib import Path

_seconds = defaultdict(float)  # lesson file name -> seconds, summed over its cells
_failed = set()


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _seconds[Path(path).name] += report.duration
        if report.failed:
            _failed.add(Path(path).name)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("P2P_RECORD_TIMINGS") != "1" or not _seconds:
        return
    from p2p_lib.results import LESSON_TIMINGS, record_lesson_times  # only now: collecting tests must not import torch
    kept = {name: s for name, s in _seconds.items() if name not in _failed}  # a failed lesson's time says little
    written = record_lesson_times(kept, os.environ.get("P2P_TIMINGS_FILE") or LESSON_TIMINGS)
    print(f"\nlesson run times ({len(_seconds) - len(_failed)} lessons) written to {written}")

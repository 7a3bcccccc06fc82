"""Lesson run times: with P2P_RECORD_TIMINGS=1, a test run that executes lessons writes how long each took
(every cell's setup + call, summed, as nbval ran it) into lessons/timings.json, and puts the line each
lesson's opening prints from it (p2p_lib.results.lesson_run_time) into that cell's committed output. Off by
default, so that `make test` leaves the checkout as it was:

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
    from p2p_lib.results import record_lesson_times, refresh_run_time_cells  # only now: not while collecting
    kept = {name: s for name, s in _seconds.items() if name not in _failed}  # a failed lesson's time says little
    written = record_lesson_times(kept)  # $P2P_TIMINGS_FILE, else lessons/timings.json
    lessons = Path(session.config.rootpath) / "lessons"
    refreshed = refresh_run_time_cells([lessons / name for name in kept if (lessons / name).exists()])
    print(f"\nlesson run times ({len(kept)} lessons) written to {written}; {len(refreshed)} lessons' run-time cells updated")

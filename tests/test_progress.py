"""p2p_lib.progress: StepProgress prints a bounded number of lines, whatever the number of steps."""
import io
import re

import pytest
import torch

from p2p_lib.progress import StepProgress, reporting_interval


def run(total, max_lines=20, start=1, values=None, **kwargs):
    out = io.StringIO()
    with StepProgress(total, desc="train", max_lines=max_lines, file=out, **kwargs) as progress:
        for step in range(start, total + 1):
            progress.update(step, values)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("total", [1, 7, 3000, 100000])
@pytest.mark.parametrize("max_lines", [1, 3, 20])
def test_lines_bounded_and_final_line_at_total(total, max_lines):
    lines = run(total, max_lines)
    assert 1 <= len(lines) <= max_lines
    assert lines[-1].startswith(f"train: {total}/{total} (100%)")
    if total >= max_lines:
        assert len(lines) >= max_lines // 2  # it does report along the way, not only at the end


def test_lines_at_multiples_of_the_interval():
    lines = run(3000)
    steps = [int(re.match(r"train: (\d+)/3000", line).group(1)) for line in lines]
    assert steps == list(range(150, 3001, 150))
    assert reporting_interval(3000, 20) == 150


def test_reporting_interval_odd_totals():
    assert reporting_interval(0, 20) == 1
    assert reporting_interval(1, 20) == 1
    assert reporting_interval(7, 20) == 1
    assert reporting_interval(21, 20) == 2
    assert reporting_interval(100, 0) == 100
    assert reporting_interval(-5, 20) == 1


@pytest.mark.parametrize("total", [0, -3, 1])
def test_odd_totals_never_raise(total):
    out = io.StringIO()
    progress = StepProgress(total, file=out)
    for step in range(1, 5):
        progress.update(step)
    progress.close()
    assert len(out.getvalue().splitlines()) == 1  # the first step already reaches the total


def test_values_formatted():
    lines = run(10, max_lines=2, values={"G_GAN": 1.23456, "G_L1": 30.123, "D_real": 0.000123456})
    assert lines[-1].endswith("| G_GAN 1.23 G_L1 30.1 D_real 0.000123")
    assert re.match(r"train: 5/10 \(50%\) \| elapsed \d+ s, [\d.e+]+ it/s, ETA \d+ s \| G_GAN", lines[0])


def test_tensors_accepted():
    values = {"G_GAN": torch.tensor(1.23456), "G_L1": torch.tensor(30.123, dtype=torch.float64),
              "count": torch.tensor(7)}
    lines = run(4, max_lines=4, values=values)
    assert len(lines) == 4
    assert lines[-1].endswith("| G_GAN 1.23 G_L1 30.1 count 7")


def test_resume_counts_from_the_first_update():
    lines = run(3000, start=1501)
    assert len(lines) <= 20
    steps = [int(re.match(r"train: (\d+)/3000", line).group(1)) for line in lines]
    assert steps == list(range(1650, 3001, 150))


def test_disabled_prints_nothing():
    assert run(3000, enabled=False) == []


def test_close_idempotent_and_reports_an_early_stop():
    out = io.StringIO()
    progress = StepProgress(3000, file=out)
    for step in range(1, 1000):
        progress.update(step)
    progress.close()
    progress.close()
    progress.update(1000)  # after close: ignored
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("999/3000 (33%)")
    assert len(lines) == 1000 // 150 + 1


def test_steps_past_total_and_sparse_updates_stay_bounded():
    out = io.StringIO()
    with StepProgress(100, max_lines=5, file=out) as progress:
        for step in range(0, 1000, 7):  # every 7th step, and on past the total
            progress.update(step)
    lines = out.getvalue().splitlines()
    assert len(lines) <= 5
    assert lines[-1].startswith("105/100")  # the first update at or past the total


def test_file_none_is_stdout_at_call_time(monkeypatch):
    progress = StepProgress(2, desc="x", max_lines=2)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)  # swapped after the reporter was made, as Jupyter does
    progress.update(1)
    progress.update(2)
    assert out.getvalue().splitlines()[-1].startswith("x: 2/2 (100%)")

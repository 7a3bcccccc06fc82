"""benchmarks/profile_step.py sorts the profiler's events into the categories its table reports."""
import importlib.util
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def categorised_time(step) -> dict:
    script = load_script()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        step()
    totals = defaultdict(float)
    for event in profiler.events():
        totals[script.category(event)] += event.self_cpu_time_total
    assert set(totals) <= set(script.CATEGORIES), set(totals) - set(script.CATEGORIES)
    return totals


def test_transposed_and_ordinary_convolutions_and_adam_land_in_their_own_categories():
    torch.manual_seed(0)
    down, up = torch.nn.Conv2d(3, 8, 4, 2, 1), torch.nn.ConvTranspose2d(8, 3, 4, 2, 1)
    optimizer = torch.optim.Adam([*down.parameters(), *up.parameters()])

    def step():
        loss = up(down(torch.randn(1, 3, 32, 32))).square().mean()
        loss.backward()
        optimizer.step()

    totals = categorised_time(step)
    for name in ("conv forward", "transposed conv forward", "conv backward", "transposed conv backward", "Adam"):
        assert totals[name] > 0, (name, dict(totals))
    assert totals["batch norm"] == 0


def test_a_network_without_transposed_convolutions_has_no_transposed_time():
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    totals = categorised_time(lambda: conv(torch.randn(1, 3, 16, 16)).sum().backward())
    assert totals["conv forward"] > 0 and totals["conv backward"] > 0
    assert totals["transposed conv forward"] == 0 and totals["transposed conv backward"] == 0

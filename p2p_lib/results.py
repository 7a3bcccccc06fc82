"""The committed results of the project's experiment scripts, read back (hand-written plumbing: no lesson
teaches reading JSON and a PNG; lessons 00, 04 and 08 all show the ablation sweep through it).

    sweep = load_sweep()                         # {"l1": [run seed 0, run seed 1, ...], "l1_cgan": [...], ...}
    run = sweep["l1_cgan"][0]                    # its result.json, plus "folder": where it lies
    images = kept_outputs(run)                   # {val pair: S × S × 3 uint8}, the outputs it kept
    colour_intersection(run["metrics"])          # the mean of its L, a, b histogram intersections

`tools/ablate.py` writes one folder per run, `experiments/ablations/SETTING-seedN/`, with `result.json`
(options, metrics on the val pairs, command, code version, machine, wall time) and `outputs.png` (one
column of the val pairs named in `shown_val_pairs`, top to bottom).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from p2p_lib.paths import PROJECT_ROOT

ABLATIONS_DIR = PROJECT_ROOT / "experiments" / "ablations"  # tools/ablate.py writes one folder per run here


def load_sweep(folder=ABLATIONS_DIR) -> dict[str, list[dict]]:
    """Every committed run of tools/ablate.py (RUN/result.json) by setting, each list sorted by seed; a
    result's "folder" is where its outputs.png is."""
    sweep = {}
    for path in sorted(Path(folder).glob("*/result.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        sweep.setdefault(result["setting"], []).append({**result, "folder": str(path.parent)})
    return {name: sorted(runs, key=lambda r: r["seed"]) for name, runs in sweep.items()}


def kept_outputs(result: dict) -> dict[int, np.ndarray]:
    """A run's outputs.png (one column: its shown_val_pairs, top to bottom, square images) as
    {val pair: S × S × 3 uint8}."""
    column = np.asarray(Image.open(Path(result["folder"]) / "outputs.png").convert("RGB"))
    pairs = result["shown_val_pairs"]
    side = column.shape[1]
    if column.shape[0] != side * len(pairs):
        raise ValueError(f"{result['folder']}/outputs.png is {column.shape[1]}×{column.shape[0]} px; "
                         f"{len(pairs)} square images of {side} px were expected (shown_val_pairs)")
    return dict(zip(pairs, column.reshape(len(pairs), side, side, 3)))


def colour_intersection(metrics: dict) -> float:
    """The mean of the L, a and b colour-histogram intersections with the real photos (1: the photos' colours)."""
    return float(np.mean(list(metrics["color_histogram_intersection"].values())))


LESSON_TIMINGS = PROJECT_ROOT / "lessons" / "timings.json"  # the root conftest.py writes it (P2P_RECORD_TIMINGS=1)


def timings_file(path=None) -> Path:
    "`path`, else $P2P_TIMINGS_FILE (the tests' own copy), else lessons/timings.json."
    return Path(path or os.environ.get("P2P_TIMINGS_FILE") or LESSON_TIMINGS)


def _this_machine() -> dict:
    from p2p_lib.device import cpu_capabilities, cpu_model  # torch: only when recording
    return {"cpu": cpu_model(), "isa": cpu_capabilities()["isa"], "cores": os.cpu_count(),
            "bf16": os.environ.get("P2P_BF16", "auto")}


def record_lesson_times(seconds: dict[str, float], path=None, today: str | None = None) -> Path:
    """Merge {lesson file name: seconds} into the timings file (other lessons' entries are kept), each with the
    machine and date it was measured on; written atomically (a temporary file, then a rename)."""
    import datetime

    path = timings_file(path)
    timings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    stamp = {"machine": _this_machine(), "date": today or datetime.date.today().isoformat()}
    timings.update({name: {"seconds": round(s, 1), **stamp} for name, s in seconds.items()})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(timings.items())), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def lesson_run_time(lesson: str, path=None) -> str:
    """One line for a lesson's opening: how long it took under nbval the last time the timings were recorded
    (`lesson`: its file name, or the number it starts with, e.g. "07")."""
    path = timings_file(path)
    timings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    name = next((n for n in timings if n == lesson or n.startswith(f"{lesson}_")), None)
    if name is None:
        return f"{lesson}: no run time recorded yet (P2P_RECORD_TIMINGS=1 make test records every lesson's)"
    entry, machine = timings[name], timings[name]["machine"]
    return (f"{name} ran in {entry['seconds'] / 60:.1f} min under the test command on {machine['cores']} cores "
            f"({machine['cpu']}, {machine['isa']}, bf16 {machine['bf16']}) on {entry['date']}; "
            "P2P_RECORD_TIMINGS=1 make test measures it again")


def refresh_run_time_cells(notebooks, path=None) -> list[Path]:
    """Write into each lesson notebook the line its run-time cell (the one calling lesson_run_time) prints now,
    as executing that cell would; nothing else in the notebook changes. Returns the notebooks changed."""
    changed = []
    for notebook in map(Path, notebooks):
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        cell = next((c for c in nb["cells"] if c["cell_type"] == "code" and "lesson_run_time(" in "".join(c["source"])), None)
        printed = [{"name": "stdout", "output_type": "stream", "text": [lesson_run_time(notebook.name, path) + "\n"]}]
        if cell is not None and cell.get("outputs") != printed:
            cell["outputs"] = printed
            tmp = notebook.with_name(notebook.name + ".tmp")
            tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, notebook)
            changed.append(notebook)
    return changed

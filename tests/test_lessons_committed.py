"""Lessons are committed as a learner should see them: executed top to bottom, outputs kept."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
FOUNDATION = ["00_what_is_pix2pix", "01_conv_blocks", "02_unet_generator", "03_patchgan_discriminator",
              "04_losses"]


def problems(nb: dict) -> list[str]:
    found = []
    spec = nb.get("metadata", {}).get("kernelspec", {})
    if spec.get("name") != "python3":
        found.append(f"kernelspec is {spec.get('name')!r}, not 'python3'")
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code" and "".join(c.get("source", "")).strip()]
    counts = [c.get("execution_count") for c in code]
    if any(n is None for n in counts):
        found.append(f"{counts.count(None)} code cells were never executed")
    elif counts != list(range(1, len(counts) + 1)):
        found.append(f"execution counts {counts} are not 1..{len(counts)}: run it top to bottom in a fresh kernel")
    for index, cell in enumerate(code):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            found.append(f"code cell {index + 1} has an error as its saved output")
    if code and not any(c.get("outputs") for c in code):
        found.append("no cell has any output: the lesson was committed unexecuted")
    if "widgets" in nb.get("metadata", {}):
        found.append("the notebook saved widget state (metadata.widgets): execute it with "
                     "--ExecutePreprocessor.store_widget_state=False")
    return found


def test_the_foundation_lessons_exist():
    names = [p.stem for p in LESSONS]
    for lesson in FOUNDATION:
        assert lesson in names, f"lessons/{lesson}.ipynb is missing"


def test_lessons_are_numbered_uniquely():
    numbers = [p.name.split("_")[0] for p in LESSONS]
    assert all(n.isdigit() and len(n) == 2 for n in numbers), numbers
    assert len(set(numbers)) == len(numbers), numbers


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_is_committed_executed_in_order(path):
    assert problems(json.loads(path.read_text(encoding="utf-8"))) == []


def test_the_check_catches_unexecuted_and_out_of_order_lessons():
    def nb(*counts, error=False):
        cells = [{"cell_type": "code", "source": f"x = {i}", "execution_count": n,
                  "outputs": [{"output_type": "error"} if error else {"output_type": "stream", "text": "ok"}]}
                 for i, n in enumerate(counts)]
        return {"metadata": {"kernelspec": {"name": "python3"}}, "cells": cells}

    assert problems(nb(1, 2, 3)) == []
    assert any("never executed" in p for p in problems(nb(1, None, 3)))
    assert any("not 1..3" in p for p in problems(nb(1, 3, 2)))
    assert any("not 1..2" in p for p in problems(nb(4, 5)))
    assert any("error" in p for p in problems(nb(1, error=True)))
    assert any("widget state" in p for p in problems({**nb(1), "metadata": {"kernelspec": {"name": "python3"},
                                                                              "widgets": {"state": {}}}}))
    unexecuted = nb(1)
    unexecuted["cells"][0]["outputs"] = []
    assert any("unexecuted" in p for p in problems(unexecuted))

"""Long cells must send few kernel output messages, or nbval loses the cell's end and fails.

nbval reads a kernel's iopub messages only after the cell has finished; a cell that sent a few
thousand (a tqdm.auto bar refreshing as a widget, a print() per step) loses the final "idle" status
and the lesson fails with "Timeout of 5 seconds exceeded waiting for output" (3,000 refreshes fail,
600 pass). These tests count the messages of a cell in a real kernel of this environment: a
per-step printer (the positive control, so the check can fail) and p2p_lib.progress.StepProgress
over 3,000 steps. A static scan keeps the widget bars out of the lessons.
"""
import json
import queue
import sys
import time
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager  # installed with nbval, a test dependency
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
MAX_OUTPUT_MESSAGES = 200  # well under the few thousand that make nbval time out
OUTPUT_TYPES = {"stream", "display_data", "update_display_data", "comm_msg", "comm_open"}
EXECUTE_TIMEOUT = 120  # seconds: generous, the machine running the tests may be busy
WIDGET_BARS = ("tqdm.auto", "tqdm.notebook", "from tqdm import tqdm")


@pytest.fixture(scope="module")
def kc():
    """One kernel for the module: the python3 kernel, run by this environment's interpreter."""
    # The kernelspecs of this venv only (nbval's --nbval-current-env does the same), not a user's or the
    # system's python3; its argv starts with "python", which jupyter_client runs as sys.executable.
    specs = KernelSpecManager(kernel_dirs=[str(Path(sys.prefix) / "share" / "jupyter" / "kernels")])
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    km.start_kernel(cwd=str(ROOT), extra_arguments=["--HistoryManager.enabled=False"])
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=EXECUTE_TIMEOUT)
        executable = _eval(client, "import sys; print(sys.executable)")
        assert Path(executable).resolve() == Path(sys.executable).resolve(), executable
        yield client
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)


def _collect(kc, code: str) -> list[dict]:
    """Run `code`; every iopub message of that execution, up to and including its "idle" status."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + EXECUTE_TIMEOUT
    messages = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no idle status within {EXECUTE_TIMEOUT} s after {len(messages)} messages")
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "error":
            raise AssertionError("the cell raised:\n" + "\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


def _eval(kc, code: str) -> str:
    return "".join(m["content"]["text"] for m in _collect(kc, code) if m["msg_type"] == "stream").strip()


def count_output_messages(kc, code: str) -> int:
    """How many output messages (stream, display_data, update_display_data, comm_msg, comm_open)
    executing `code` in the kernel of client `kc` sends; raises if the cell raises."""
    return sum(m["msg_type"] in OUTPUT_TYPES for m in _collect(kc, code))


def test_a_per_step_printer_floods(kc):
    """Positive control: the counter sees a flood, so the test below could fail."""
    code = "import time\nfor i in range(2000):\n    print(i, flush=True)\n    time.sleep(0.0005)\n"
    count = count_output_messages(kc, code)
    print(f"per-step print: {count} output messages")
    assert count > 500, count


def test_step_progress_sends_few_messages(kc):
    # p2p_lib/progress.py is loaded by its path: `import p2p_lib` imports torch and every lesson's
    # module, seconds on a busy 2-core machine, and the messages do not depend on it.
    code = (
        "import importlib.util, time\n"
        f"spec = importlib.util.spec_from_file_location('progress', {str(ROOT / 'p2p_lib' / 'progress.py')!r})\n"
        "progress_module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(progress_module)\n"
        "with progress_module.StepProgress(3000, desc='train') as progress:\n"
        "    for step in range(1, 3001):\n"
        "        time.sleep(0.0005)\n"
        "        progress.update(step, {'G_GAN': 1.0 / step, 'G_L1': 30.0})\n"
    )
    count = count_output_messages(kc, code)
    print(f"StepProgress(3000): {count} output messages")
    assert count < MAX_OUTPUT_MESSAGES, count


def _code_cells(path: Path):
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for index, cell in enumerate(cells):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            yield index, "".join(source) if isinstance(source, list) else source


def test_lessons_use_no_widget_progress_bars():
    lessons = sorted((ROOT / "lessons").glob("*.ipynb"))
    assert lessons
    found = [f"{path.name} cell {index}: {bar}" for path in lessons for index, source in _code_cells(path)
             for bar in WIDGET_BARS if bar in source]
    assert not found, ("a widget progress bar sends a message per refresh and makes nbval time out; "
                       "use p2p_lib.progress.StepProgress instead:\n" + "\n".join(found))

"""The results page `p2p train` keeps current (p2p_lib.runpage: web/index.html) and what --tensorboard writes
besides the scalars (p2p_lib.runlog: the sample pictures, the hyperparameters): the page writer on made-up
run folders, then tiny real runs, their page and their TensorBoard event file read back."""
import errno
import html.parser
import json
import re

import numpy as np
import pytest
from PIL import Image

import p2p_lib.checkpoint as checkpoint_module
from p2p_lib.runlog import read_log
from p2p_lib.runpage import MAX_POINTS, ResultsPage, curve_series, svg_curve
from test_engine import assert_same_training_state, data, state, tiny, train  # noqa: F401  (data: the fixture)


def headings(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"<h3>epoch \[(\d+)\]</h3>", page)]


def section(page: str, epoch: int) -> str:
    "The HTML of one epoch's section."
    return page.split(f'<section class="epoch" id="epoch{epoch}">', 1)[1].split("</section>", 1)[0]


def sources(part: str) -> list[str]:
    "The img addresses in `part`, without the ?v= that makes a reloaded page fetch a replaced picture."
    return [src.split("?")[0] for src in re.findall(r'<img [^>]*src="([^"]+)"', part)]


def picture(value: int, size=(8, 8)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def made_up_run(run_dir, epochs=(1, 2, 3), name_loss="G_L1"):
    """A run folder as p2p train leaves it: a validation grid per epoch in images/ (and one where the run
    stopped inside epoch 3, at iteration 12) and loss_log.jsonl; the page's own files are the test's."""
    (run_dir / "images").mkdir(parents=True)
    records = []
    for epoch in epochs:
        Image.fromarray(picture(10 * epoch, (16, 12))).save(run_dir / "images" / f"epoch{epoch:03d}.png")
        records += [{"type": "train", "epoch": epoch, "epoch_iter": 2, "step": 5 * epoch - 3, name_loss: 40.0 - epoch,
                     "D_real": 0.5, "lr_G": 2e-4, "it_per_s": 3.0},
                    {"type": "epoch", "epoch": epoch, "step": 5 * epoch, name_loss: 39.0 - epoch, "D_real": 0.5,
                     "val_L1": 0.3 - epoch / 100, "val_PSNR": 10.0 + epoch, "seconds": 1.0}]
    Image.fromarray(picture(99, (16, 12))).save(run_dir / "images" / "step000012.png")
    records.append({"type": "final", "epoch": 3, "step": 12, "val_L1": 0.25, "val_PSNR": 12.5})
    (run_dir / "loss_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_the_page_shows_each_epoch_newest_first_with_its_samples_visuals_and_scores(tmp_path):
    run_dir = tmp_path / "run"
    made_up_run(run_dir, epochs=(1, 2))
    page = ResultsPage(run_dir, "Experiment name = run")
    page.save_visuals(1, 4, {"real_A": picture(1), "fake_B": picture(2), "real_B": picture(3)})
    page.save_visuals(3, 11, {"real_A": picture(4), "fake_B": picture(5), "real_B": picture(6)})
    page.write("training: iteration 12")
    text = (run_dir / "web" / "index.html").read_text()
    assert headings(text) == [3, 2, 1]
    assert sources(section(text, 3)) == ["../images/step000012.png", "images/epoch003_real_A.png",
                                         "images/epoch003_fake_B.png", "images/epoch003_real_B.png"]
    assert "validation where the run stopped, iteration 12: val_L1 0.2500, val_PSNR 12.50 dB" in section(text, 3)
    assert "training batch, iteration 11" in section(text, 3)
    assert sources(section(text, 2)) == ["../images/epoch002.png"]
    assert "validation at the end of epoch 2 (iteration 10): val_L1 0.2800, val_PSNR 12.00 dB" in section(text, 2)
    assert sources(section(text, 1))[0] == "../images/epoch001.png" and "iteration 4" in section(text, 1)
    assert np.array_equal(np.asarray(Image.open(run_dir / "web" / "images" / "epoch001_fake_B.png")), picture(2))
    assert '<meta http-equiv="refresh" content="10">' in text and "training: iteration 12" in text
    page.write("not training", running=False)  # the last page of a run does not reload itself
    assert "http-equiv" not in (run_dir / "web" / "index.html").read_text()


class Tags(html.parser.HTMLParser):
    "The start tags of a page, and its text."

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_every_text_on_the_page_is_escaped(tmp_path):
    run_dir = tmp_path / "run"
    loss = '<b onclick="x()">L&1</b>'
    made_up_run(run_dir, epochs=(1,), name_loss=loss)
    title = 'Experiment name = <script>alert("run")</script> & co'
    ResultsPage(run_dir, title).write("status <i>now</i>")
    text = (run_dir / "web" / "index.html").read_text()
    parsed = Tags()
    parsed.feed(text)
    assert "script" not in parsed.tags and "b" not in parsed.tags and "i" not in parsed.tags
    shown = "".join(parsed.text)
    assert title in shown and "status <i>now</i>" in shown and f"{loss}: 39" in shown  # shown as written


def test_the_curves_come_from_the_log_one_point_per_iteration(tmp_path):
    records = [{"type": "train", "step": 3, "G_L1": 30.0, "lr_G": 2e-4}, {"type": "train", "step": 6, "G_L1": 28.0},
               {"type": "epoch", "epoch": 1, "step": 6, "G_L1": 29.0, "val_L1": 0.3, "val_PSNR": 11.0},
               {"type": "resume", "step": 3, "epoch": 1, "lr": 2e-4},
               {"type": "train", "step": 6, "G_L1": 27.5},  # a resumed run trained iteration 6 again: it replaces it
               {"type": "train", "step": 9, "G_L1": float("nan")},  # a diverged loss is not drawn
               {"type": "final", "epoch": 2, "step": 8, "val_L1": 0.29, "val_PSNR": 11.5}]
    series = curve_series(records)
    assert series == {"G_L1": [(3, 30.0), (6, 27.5)], "val_L1": [(6, 0.3), (8, 0.29)],
                      "val_PSNR": [(6, 11.0), (8, 11.5)]}
    epochs_only = curve_series([r for r in records if r["type"] != "train"])  # print_freq longer than the run
    assert epochs_only["G_L1"] == [(6, 29.0)]
    log = tmp_path / "loss_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"type": "train", "st')  # a line half written
    assert len(read_log(log)) == len(records)
    long = [(step, float(step % 7)) for step in range(5000)]
    svg = svg_curve("G_L1", long)
    drawn = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    assert 100 < len(drawn) <= MAX_POINTS + 1 and "iteration 4999" in svg and "G_L1: 1" in svg  # 4999 % 7 = 1
    xs = [float(point.split(",")[0]) for point in drawn]
    assert xs == sorted(xs) and xs[0] == 50.0 and xs[-1] == 270.0  # the whole run, left to right


def test_the_page_draws_a_curve_for_each_loss_and_score(tmp_path):
    run_dir = tmp_path / "run"
    made_up_run(run_dir)
    ResultsPage(run_dir, "run").write("training")
    text = (run_dir / "web" / "index.html").read_text()
    charts = dict(re.findall(r'<svg class="curve" data-name="([^"]+)" data-points="(\d+)"', text))
    assert charts == {"G_L1": "3", "D_real": "3", "val_L1": "4", "val_PSNR": "4"}  # 3 epochs, 3 + 1 validations
    assert text.index('id="curves"') < text.index('<section class="epoch"')


def test_page_files_are_written_atomically_and_a_failed_write_keeps_the_last_page(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    made_up_run(run_dir, epochs=(1,))
    page = ResultsPage(run_dir, "run")
    page.save_visuals(1, 3, {"real_A": picture(1), "fake_B": picture(2), "real_B": picture(3)})
    page.write("first")
    before = (run_dir / "web" / "index.html").read_text()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint_module.os, "fsync", disk_full)
    with pytest.raises(OSError):
        page.write("second")
    with pytest.raises(OSError):
        page.save_visuals(1, 4, {"real_A": picture(7)})
    monkeypatch.undo()
    assert (run_dir / "web" / "index.html").read_text() == before
    assert np.array_equal(np.asarray(Image.open(run_dir / "web" / "images" / "epoch001_real_A.png")), picture(1))
    leftovers = [p.name for p in (run_dir / "web").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and sorted(p.name for p in (run_dir / "web").iterdir()) == ["images", "index.html"]
    (run_dir / "web" / ".index.html.killed.tmp").write_bytes(b"half")  # what a killed process leaves
    assert page.remove_leftovers() == [".index.html.killed.tmp"]


def test_a_page_written_again_later_keeps_every_earlier_entry(tmp_path):
    run_dir = tmp_path / "run"
    made_up_run(run_dir, epochs=(1, 2))
    ResultsPage(run_dir, "run").save_visuals(1, 4, {"real_A": picture(1), "fake_B": picture(2), "real_B": picture(3)})
    ResultsPage(run_dir, "run").write("first run")
    Image.fromarray(picture(30, (16, 12))).save(run_dir / "images" / "epoch003.png")  # the resumed run's epoch
    with open(run_dir / "loss_log.jsonl", "a") as log:
        log.write(json.dumps({"type": "epoch", "epoch": 3, "step": 15, "val_L1": 0.2, "val_PSNR": 13.0}) + "\n")
    ResultsPage(run_dir, "run").write("resumed")  # a new process: nothing in memory
    text = (run_dir / "web" / "index.html").read_text()
    assert headings(text) == [3, 2, 1] and "training batch, iteration 4" in section(text, 1)
    assert "validation at the end of epoch 3 (iteration 15): val_L1 0.2000" in section(text, 3)


# ----------------------------------------------------------------------------------------- real runs

def event_data(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def hparams_of(events) -> tuple[dict, list[str]]:
    "The hyperparameters of the session, and the metric tags the HPARAMS tab shows beside them."
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    content = events.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    return values, [metric.name.tag for metric in experiment.metric_infos]


def test_a_run_keeps_its_page_current_and_a_resumed_run_keeps_the_earlier_entries(data, tmp_path):
    run_dir = tmp_path / "ck" / "run"
    seen = {}

    def look_at_the_page(step, losses):  # the page as a browser would read it while the run trains
        if step == 6:
            seen["page"] = (run_dir / "web" / "index.html").read_text()
    first = train(tiny(data, tmp_path / "ck", "--max_steps", "7", "--update_html_freq", "2", "--tensorboard"),
                  on_step=look_at_the_page)
    assert first["status"] == "done"
    during = seen["page"]  # written at the end of epoch 1 (iteration 5)
    assert '<meta http-equiv="refresh"' in during and "training: epoch 2 of 4, iteration 5" in during
    assert headings(during) == [1] and "../images/epoch001.png" in sources(during)
    text = (run_dir / "web" / "index.html").read_text()
    assert headings(text) == [2, 1] and "not training: stopped at iteration 7" in text and "http-equiv" not in text
    assert sources(section(text, 1)) == ["../images/epoch001.png", "images/epoch001_real_A.png",
                                         "images/epoch001_fake_B.png", "images/epoch001_real_B.png"]
    assert "training batch, iteration 4" in section(text, 1) and "training batch, iteration 6" in section(text, 2)
    assert "../images/step000007.png" in sources(section(text, 2))
    assert Image.open(run_dir / "web" / "images" / "epoch002_fake_B.png").size == (128, 128)

    events = event_data(run_dir / "tensorboard")
    assert [(e.step, e.width, e.height) for e in events.Images("val/samples")] == [(1, 384, 256), (2, 384, 256)]
    assert [(e.step, e.width, e.height) for e in events.Images("train/visuals")] == [(s, 384, 128) for s in (2, 4, 6)]
    records = read_log(run_dir / "loss_log.jsonl")
    assert [e.step for e in events.Scalars("train/G_L1")] == [3, 6]
    assert [e.value for e in events.Scalars("val/L1")] == pytest.approx([r["val_L1"] for r in records if "val_L1" in r])
    hparams, metrics = hparams_of(events)
    assert (hparams["netG"], hparams["ngf"], hparams["update_html_freq"], hparams["max_dataset_size"]) == \
        ("unet_128", 4, 2, "inf")
    assert metrics == ["val/L1", "val/PSNR"]

    resumed = train(tiny(data, tmp_path / "ck", "--continue_train", "--max_steps", "10", "--update_html_freq", "2"))
    assert resumed["status"] == "done"
    text = (run_dir / "web" / "index.html").read_text()
    assert headings(text) == [2, 1]
    assert sources(section(text, 2)) == ["../images/epoch002.png", "../images/step000007.png",
                                         "images/epoch002_real_A.png", "images/epoch002_fake_B.png",
                                         "images/epoch002_real_B.png"]
    assert "training batch, iteration 10" in section(text, 2) and "training batch, iteration 4" in section(text, 1)


def test_no_html_writes_no_web_folder_and_tensorboard_still_gets_the_visuals(data, tmp_path):
    result = train(tiny(data, tmp_path / "ck", "--max_steps", "2", "--no_html", "--tensorboard",
                        "--update_html_freq", "1", "--num_val", "0"))
    run_dir = tmp_path / "ck" / "run"
    assert result["status"] == "done" and not (run_dir / "web").exists()
    assert [e.step for e in event_data(run_dir / "tensorboard").Images("train/visuals")] == [1, 2]


def test_a_page_that_cannot_be_written_stops_nothing_but_itself(data, tmp_path, capsys):
    run_dir = tmp_path / "ck" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "web").write_text("a file where the page's folder should be")
    result = train(tiny(data, tmp_path / "ck", "--max_steps", "2", "--update_html_freq", "1", "--num_val", "0"))
    assert result["status"] == "done" and (run_dir / "latest_state.pt").is_file()
    err = capsys.readouterr().err
    assert err.count("the results page cannot be written") == 1  # said once, then given up
    assert "is a file, where a folder should be" in err and "training goes on without it" in err


def test_the_training_visuals_change_nothing_in_the_training(data, tmp_path):
    "G runs once more for each set of visuals: the weights, optimisers and random state come out the same."
    watched = train(tiny(data, tmp_path / "ck", "--max_steps", "4", "--update_html_freq", "1", "--num_val", "0",
                         name="watched"))
    unwatched = train(tiny(data, tmp_path / "ck", "--max_steps", "4", "--no_html", "--num_val", "0", name="plain"))
    assert watched["status"] == unwatched["status"] == "done"
    assert len(list((tmp_path / "ck" / "watched" / "web" / "images").iterdir())) == 3  # epoch 1's, saved 4 times
    assert_same_training_state(state(tmp_path / "ck" / "watched"), state(tmp_path / "ck" / "plain"))

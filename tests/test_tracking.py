"""Experiment tracking (``--log-with``): TensorBoard event files readable by TensorBoard itself,
``none`` writes nothing, bad backends fail in one line, and the training commands / the
pipeline send their curves through it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from world2act import World2ActError
from world2act.utils import tracking
from world2act.utils.tracking import check_backend, flatten, make_tracker

pytest.importorskip("tensorboard")


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard reads ``logdir`` (one run folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir))
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_tensorboard_scalars_are_readable(tmp_path):
    with make_tracker("tensorboard", tmp_path, "unit", {"lr": 1e-3, "dims": [1, 2], "nested": {"a": None}}) as tr:
        for s in range(3):
            tr.log({"step": s, "kind": "train", "loss": 1.0 / (s + 1), "parts": {"nce": 0.5, "ok": True},
                    "skipped": [1, 2], "none": None}, step=s, prefix="train/")
    assert tr.backend == "tensorboard"
    sc = scalars(tmp_path / "tensorboard")
    assert set(sc) == {"train/loss", "train/parts/nce", "train/parts/ok"}
    assert [s for s, _ in sc["train/loss"]] == [0, 1, 2]
    assert sc["train/loss"][2][1] == pytest.approx(1 / 3)
    tr.close()  # idempotent


def test_none_writes_nothing(tmp_path):
    tr = make_tracker("none", tmp_path / "run", "unit", {"x": 1})
    tr.log({"loss": 1.0}, step=1)
    tr.close()
    assert not (tmp_path / "run").exists()
    assert make_tracker(None, tmp_path, "unit").backend == "none"


def test_unknown_or_missing_backend_is_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(World2ActError, match="valid are none, tensorboard, wandb, trackio"):
        make_tracker("mlflow", tmp_path, "unit")
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    for backend in ("wandb", "trackio", "tensorboard"):
        with pytest.raises(World2ActError, match=rf"--log-with {backend}: .*pip install {backend}\)$"):
            check_backend(backend)
    assert not any(tmp_path.iterdir())


def _fake_module(name, calls):
    """A stand-in ``wandb`` / ``trackio`` recording ``init(**kw)``, ``run.log(values, step)``, ``run.finish()``."""
    import importlib.machinery
    import types

    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)

    class Run:
        def log(self, values, step=None, **kw):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        return Run()

    mod.init = init
    return mod


@pytest.mark.parametrize("backend", ["wandb", "trackio"])
def test_wandb_and_trackio_go_through_accelerate_offline(backend, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, backend, _fake_module(backend, calls))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_MODE")  # unset: wandb runs offline unless the user says otherwise
    monkeypatch.delenv("TRACKIO_SPACE_ID", raising=False)
    with make_tracker(backend, tmp_path, "align", {"lr": 1e-3, "betas": [0.9, 0.99]}) as tr:
        tr.log({"step": 5, "kind": "eval", "top1_v2a": 0.5}, step=5, prefix="heldout/")
    (_, kw), (_, values, step), (fin,) = calls
    assert kw["project"] == "world2act" and kw["name"] == "align" and kw["config"] == {"lr": 1e-3, "betas": "[0.9, 0.99]"}
    if backend == "wandb":
        assert kw["mode"] == "offline" and kw["dir"] == str(tmp_path)
    else:
        assert "space_id" not in kw  # trackio's local store
    assert values == {"heldout/top1_v2a": 0.5} and step == 5 and fin == "finish"


def test_flatten_keeps_numbers_only():
    import numpy as np

    flat = flatten({"step": 3, "iteration": 3, "a": np.float32(0.5), "b": {"c": 2, "d": "x", "step": 1}, "e": [1]}, "p/")
    assert flat == {"p/a": 0.5, "p/b/c": 2.0, "p/b/step": 1.0}  # the x-axis keys are dropped at the top level only


def test_align_logs_losses_and_heldout_retrieval(tmp_path):
    from world2act.align import AlignConfig, synthetic_dataset
    from world2act.align.train import run

    d = synthetic_dataset(n_skills=3, n_demos=5, seed=1)
    cfg = AlignConfig(steps=20, batch_size=16, anchors_per_batch=8, num_negatives=7, eval_every=10, log_every=5,
                      checkpoint_every=20, lr=1e-3, latent_dim=8)
    run(cfg, tmp_path / "align", data=d, progress=False, log_with="tensorboard")
    sc = scalars(tmp_path / "align" / "tensorboard")
    assert [s for s, _ in sc["train/loss"]] == [5, 10, 15, 20]
    assert {"train/nce", "train/rec", "heldout/top1_v2a", "heldout/pos_cos", "heldout/neg_cos"} <= set(sc)
    assert [s for s, _ in sc["heldout/top1_v2a"]] == [0, 10, 20]


FAKE_TRAINER = """
import json, sys
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1]); out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(json.dumps(sys.argv[1:]))
"""


def test_pipeline_passes_log_with_to_training_stages_only(tmp_path):
    from world2act.pipeline import Stage, run_pipeline

    script = tmp_path / "fake.py"
    script.write_text(FAKE_TRAINER)
    prog = [sys.executable, str(script)]

    def preset():
        return [Stage("base", "train-base", [], [], program=prog),
                Stage("eval-base", "eval", [], ["base"], program=prog)], {"description": "test"}

    out = tmp_path / "run"
    run_pipeline(preset, out, log_with="tensorboard", max_parallel=1)
    assert json.loads((out / "base" / "argv.json").read_text())[-2:] == ["--log-with", "tensorboard"]
    assert "--log-with" not in json.loads((out / "eval-base" / "argv.json").read_text())
    calls = (out / "base" / "argv.json").stat().st_mtime
    run_pipeline(preset, out)  # the tracker is not part of a stage's hash: nothing re-runs
    assert (out / "base" / "argv.json").stat().st_mtime == calls
    with pytest.raises(World2ActError, match="valid are"):
        run_pipeline(preset, out, log_with="nope")


def test_post_train_cli_logs_iterations_and_summary(tmp_path, monkeypatch):
    """The CLI opens the tracker and hands it to the loop (the loop itself needs a simulator;
    here a stand-in logs two records the way ``loop.run`` does: ``tracker.log(rec, step=it)``)."""
    import world2act.posttrain.loop as loop
    from world2act.cli import main as cli_main

    def fake_run(cfg, out, *, device="cpu", resume=False, tracker=loop.NO_TRACKER):
        for it in range(2):
            tracker.log({"iteration": it, "task": "0", "loss": 1.0 - it, "pos_cos": 0.1 * it, "neg_cos": 0.0,
                         "delta_abs": 0.01}, step=it)
        return {"pos_cos_first": 0.0, "pos_cos_last": 0.1, "iterations": 2, "warnings": []}

    monkeypatch.setattr(loop, "run", fake_run)
    out = tmp_path / "pt"
    assert cli_main(["post-train", "--policy", "p", "--wm", "w", "--align", "a", "--iterations", "2", "--out", str(out),
                     "--log-with", "tensorboard"]) == 0
    sc = scalars(out / "tensorboard")
    assert [s for s, _ in sc["pos_cos"]] == [0, 1] and {"neg_cos", "delta_abs", "loss"} <= set(sc)
    assert "iteration" not in sc and sc["summary/pos_cos_last"] == [(2, pytest.approx(0.1))]

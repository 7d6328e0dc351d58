"""Shared options (issue 17): every command has ``--help``; eval, imagine and pipeline honour
``--config FILE.yaml`` and ``key=value`` overrides (and pipeline ``--seed`` / ``--device``)."""
import json
import types

import pytest

from world2act import World2ActError
from world2act.cli import COMMANDS, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_the_shared_options(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--seed", "--device", "--config", "key=value"):
        assert opt in text, f"{command} --help lacks {opt}"


def test_eval_honours_config_and_overrides(tmp_path, monkeypatch):
    import world2act.evaluation.harness as harness

    seen = {}

    def fake_evaluate(policy, benchmark, tasks, trials, seeds, out, **kw):
        seen.update(policy=policy, benchmark=benchmark, tasks=tasks, trials=trials, seeds=seeds, out=out, **kw)
        return {"overall": {"success_rate": 0.5, "n_success": 1, "n_trials": 2, "n_errors": 0}}

    monkeypatch.setattr(harness, "evaluate", fake_evaluate)
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("policy: expert\nbenchmark: metaworld\ntrials: 3\nworkers: 0\nseeds: [0, 1]\nvideo_episodes: 1\n")
    out = str(tmp_path / "e")
    assert main(["eval", "--config", str(cfg), "--out", out, "--workers", "1", "video_episodes=0", "latency=false"]) == 0
    assert seen["policy"] == "expert" and seen["benchmark"] == "metaworld"  # from the YAML
    assert seen["trials"] == 3 and seen["seeds"] == [0, 1] and seen["tasks"] == "all"
    assert seen["workers"] == 1  # an option beats the YAML
    assert seen["video_episodes"] == 0 and seen["latency"] is False  # overrides come last
    # without a config the options alone still work; a bad key and --seed are one-line errors
    assert main(["eval", "--policy", "expert", "--benchmark", "metaworld", "--trials", "2", "--out", out]) == 0
    assert seen["trials"] == 2 and seen["workers"] == 2 and seen["latency"] is True
    assert main(["eval", "--config", str(cfg), "--out", out, "trails=2"]) == 2
    assert main(["eval", "--config", str(cfg), "--out", out, "--seed", "3"]) == 2
    assert main(["eval", "--out", out]) == 2  # no policy anywhere


def test_imagine_honours_config_overrides_seed_and_writes_a_manifest(tmp_path, monkeypatch):
    import numpy as np

    import world2act.worldmodel.imagine as im
    from world2act.worldmodel.model import WorldModel

    loaded, seen = {}, {}

    def fake_load(path, device=None, overrides=None, **kw):
        loaded.update(path=path, device=device, overrides=overrides)
        return types.SimpleNamespace(config=types.SimpleNamespace(frame_size=(8, 8)))

    def fake_imagine(wm, frame, instruction, out, **kw):
        seen.update(instruction=instruction, **kw)
        return {"clip_prompts": ["pick up the bowl"], "video_shape": [5, 8, 8, 3], "latents_shape": [2, 4, 1, 1],
                "num_inference_steps": kw["steps"], "generation_s": 0.0}

    monkeypatch.setattr(WorldModel, "load", fake_load)
    monkeypatch.setattr(im, "imagine", fake_imagine)
    monkeypatch.setattr(im, "load_image", lambda path, size, resize=False: np.zeros((*size, 3), np.uint8))
    cfg = tmp_path / "im.yaml"
    cfg.write_text("wm: some/wm\ninstruction: pick up the bowl\nimage: first.png\nsteps: 3\nguidance: 1.0\n"
                   "model: {num_frames: 5}\n")
    out = tmp_path / "im"
    assert main(["imagine", "--config", str(cfg), "--out", str(out), "--seed", "7", "--device", "cpu",
                 "guidance=2.5", "image_size=[8, 8]", "model.num_frames=9"]) == 0
    assert seen["instruction"] == "pick up the bowl" and seen["steps"] == 3  # from the YAML
    assert seen["guidance_scale"] == 2.5 and seen["seed"] == 7  # override, --seed
    assert loaded["path"] == "some/wm" and loaded["device"] == "cpu"
    assert loaded["overrides"] == {"num_frames": 9, "image_size": [8, 8]}  # world-model fields: YAML <- overrides
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "imagine" and man["config"]["steps"] == 3 and man["config"]["seed"] == 7
    assert man["config"]["model"] == {"num_frames": 9, "image_size": [8, 8]}
    assert man["metrics"]["clips"] == 1
    assert main(["imagine", "--config", str(cfg), "--out", str(out), "steps=many"]) == 2
    assert main(["imagine", "--out", str(out), "--image", "x.png"]) == 2  # no --wm anywhere


def test_pipeline_honours_config_overrides_seed_and_device(tmp_path, monkeypatch):
    import world2act.pipeline as pl

    seen = {}

    def fake_run(preset, out, **kw):
        seen.update(preset=preset, out=out, **kw)
        return {}

    monkeypatch.setattr(pl, "run_pipeline", fake_run)
    cfg = tmp_path / "pl.yaml"
    cfg.write_text("preset: smoke\nparallel: 1\nonly: [demos, skills]\nseed: 5\n")
    out = str(tmp_path / "p")
    assert main(["pipeline", "--config", str(cfg), "--out", out, "--device", "cpu", "parallel=3"]) == 0
    assert seen["preset"] == "smoke" and seen["only"] == ["demos", "skills"]  # from the YAML
    assert seen["max_parallel"] == 3  # the override comes last
    assert seen["seed"] == 5 and seen["device"] == "cpu"
    assert main(["pipeline", "--config", str(cfg), "--out", out, "--seed", "9"]) == 0
    assert seen["seed"] == 9 and seen["device"] == "auto" and seen["max_parallel"] == 1
    assert main(["pipeline", "--out", out]) == 2  # no preset anywhere
    assert main(["pipeline", "--config", str(cfg), "--out", out, "preset=huge"]) == 2

    # --seed reaches every stage but the evaluations (whose seeds are --seeds); --device every stage
    stages = [pl.Stage("demos", "collect", ["--episodes", "2"], []), pl.Stage("eval-base", "eval", ["--seeds", "0"], [])]
    assert pl.with_seed_device(stages) == stages  # the defaults change nothing: old runs stay up to date
    got = pl.with_seed_device(stages, seed=5, device="cpu")
    assert got[0].args == ["--episodes", "2", "--seed", "5", "--device", "cpu"]
    assert got[1].args == ["--seeds", "0", "--device", "cpu"]
    assert pl.stage_hash(got[0], {}) != pl.stage_hash(stages[0], {})
    with pytest.raises(World2ActError, match="device"):
        pl.PipelineConfig(device="tpu")

"""Declared-once options (issue 17): every command's flags are generated from its config
dataclass; for every command a YAML ``--config`` value, an option and a dotted ``key=value``
override all reach the config the command runs with, and every flag spelling of the
hand-written parsers (before the generator) still parses."""
import functools
import importlib
import operator
import subprocess
import sys

import pytest
import yaml

from world2act import cli
from world2act.cli import COMMANDS, command_parser

# command: (YAML file, options, override, expected config values (dotted))
CASES = {
    "collect": ({"benchmark": "metaworld", "tasks": ["pick-place-v3"], "episodes": 4}, ["--workers", "0", "--episodes", "2"],
                "image_size=32", {"tasks": ["pick-place-v3"], "episodes": 2, "workers": 0, "image_size": 32}),
    "segment": ({"dataset": "d", "tau": 0.2}, ["--llm-timeout", "5", "--no-progress"], "llm.model=m",
                {"dataset": "d", "tau": 0.2, "llm.timeout_s": 5.0, "llm.model": "m", "progress": False, "out": "OUT"}),
    "train-wm": ({"dataset": "d", "steps": 5}, ["--vae-steps", "3"], "lr=0.01",
                 {"dataset": "d", "steps": 5, "vae_steps": 3, "lr": 0.01, "seed": 3}),
    "imagine": ({"wm": "w", "instruction": "i", "image": "x.png"}, ["--steps", "3"], "guidance=2.0",
                {"wm": "w", "steps": 3, "guidance": 2.0, "seed": 3}),
    "wm-eval": ({"wm": "w", "dataset": "d"}, ["--strips", "1"], "episodes=2", {"wm": "w", "strips": 1, "episodes": 2}),
    "train-base": ({"dataset": "d", "steps": 5}, ["--chunk-size", "16"], "lr=0.01",
                   {"dataset": "d", "steps": 5, "chunk_size": 16, "lr": 0.01, "seed": 3}),
    "align": ({"skills": "s", "wm": "w", "steps": 9}, ["--hard-ratio", "0.5", "--compare", "--steps", "4"], "lam=0.2",
              {"skills": "s", "hard_ratio": 0.5, "compare": True, "steps": 4, "lam": 0.2}),
    "post-train": ({"policy": "p", "wm": "w", "align": "a"}, ["--tasks", "0,1", "--init-states", "6"], "iterations=3",
                   {"policy": "p", "tasks": ["0", "1"], "init_states_per_task": 6, "iterations": 3}),
    "dreamgen": ({"policy": "p", "idm": {"lr": 0.5}}, ["--idm-steps", "7", "--steps", "9"], "finetune.pseudo_fraction=0.25",
                 {"policy": "p", "idm.lr": 0.5, "idm.steps": 7, "finetune.steps": 9, "finetune.pseudo_fraction": 0.25}),
    "diagnose": ({"wm": "w", "sigmas": [2.0]}, ["--no-imagine"], "samples=3",
                 {"wm": "w", "sigmas": [2.0], "imagine": False, "samples": 3}),
    "eval": ({"policy": "expert", "benchmark": "metaworld", "trials": 5}, ["--trials", "3"], "workers=0",
             {"policy": "expert", "trials": 3, "workers": 0, "latency": True}),
    "eval-compare": ({"base": "b"}, ["--post", "p"], "base=b2", {"base": "b2", "post": "p"}),
    "serve": ({"policy": "p"}, ["--port", "0"], "threads=2", {"policy": "p", "port": 0, "threads": 2, "warmup": True}),
    "pipeline": ({"preset": "smoke"}, ["--parallel", "1"], "only=demos",
                 {"preset": "smoke", "parallel": 1, "only": ["demos"], "seed": 3}),
    "wm-compare": ({"skill_wm": "s", "demos": "d", "skills": "k"}, ["--base-wm", "b", "--episodes", "2"], "steps=4",
                   {"skill_wm": "s", "base_wm": "b", "episodes": 2, "steps": 4, "seed": 3}),
    "report": ({"preset": "quick"}, [], "preset=smoke", {"preset": "smoke"}),
}


def _run(monkeypatch, argv):
    module = importlib.import_module(COMMANDS[argv[0]][0])
    seen = {}
    monkeypatch.setattr(module, "main", lambda cfg, args: seen.update(cfg=cfg, args=args) or 0)
    rc = cli.main(argv)
    return rc, seen.get("cfg"), seen.get("args")


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"compare"}))
def test_yaml_option_and_override_reach_the_config(command, tmp_path, monkeypatch):
    data, options, override, expected = CASES[command]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    seed = ["--seed", "3"] if command not in ("eval",) else []
    rc, cfg, args = _run(monkeypatch, [command, "--config", str(path), "--out", "OUT", *seed, *options, override])
    assert rc == 0
    for key, value in expected.items():
        assert functools.reduce(getattr, key.split("."), cfg) == value, (command, key)
    assert args.device == "auto" and args.out == "OUT"
    bad = "steps=many" if command == "imagine" else "no_such_key=1"  # imagine: unknown keys are world-model fields
    assert _run(monkeypatch, [command, "--config", str(path), "--out", "OUT", bad])[0] == 2


def test_compare_takes_the_grid_as_its_config(tmp_path, monkeypatch):
    rc, cfg, args = _run(monkeypatch, ["compare", "--config", "g.yaml", "--out", "OUT", "--check", "trials=3"])
    assert rc == 0 and cfg.grid == "g.yaml" and cfg.check and args.overrides == ["trials=3"]
    assert _run(monkeypatch, ["compare", "--grid", "a.yaml", "--config", "b.yaml", "--out", "OUT"])[0] == 2


def test_required_options_may_come_from_yaml_and_are_named_when_missing(tmp_path, monkeypatch, capsys):
    assert _run(monkeypatch, ["post-train", "--out", "OUT", "--wm", "w", "--align", "a"])[0] == 2
    assert "--policy is required" in capsys.readouterr().err
    assert _run(monkeypatch, ["collect", "--out", "OUT", "--benchmark", "metaworld", "--tasks", "all"])[0] == 2
    assert "--episodes is required" in capsys.readouterr().err
    assert _run(monkeypatch, ["align", "--out", "OUT", "--skills", "s", "--wm", "w", "--resume", "--overwrite"])[0] == 2


# every flag of the hand-written parsers before the generator (commit e526f74), shared ones included
OLD_FLAGS = {
    "align": "--compare --hard-ratio --lam --latent-source --sigma --skills --steps --variant --wm --resume --overwrite --log-with",
    "collect": "--benchmark --cameras --episodes --image-size --max-attempts --max-steps --tasks --video-codec --workers "
               "--resume --overwrite",
    "compare": "--check --grid",
    "diagnose": "--align --dataset --episodes --imagine-steps --no-imagine --samples --sigmas --wm --overwrite",
    "dreamgen": "--benchmark --dataset --idm-steps --imagine-steps --init-states --policy --pseudo-fraction --steps --tasks "
                "--wm --resume --overwrite",
    "eval": "--benchmark --image-size --init-offset-per-seed --init-states --no-latency --policy --seeds --tasks --trials "
            "--video-episodes --workers --resume --overwrite",
    "eval-compare": "--base --post",
    "imagine": "--clips-per-skill --dataset --episode --guidance --image --instruction --resize --steps --wm",
    "pipeline": "--only --parallel --preset --log-with --resume --overwrite",
    "post-train": "--align --benchmark --init-states --iterations --num-envs --policy --targets --tasks --wm --workers "
                  "--resume --overwrite --log-with",
    "segment": "--dataset --decomposer --gripper-from --include-failed --llm-api-key-env --llm-base-url --llm-cache-dir "
               "--llm-concurrency --llm-json-mode --llm-model --llm-timeout --min-clip-frames --no-progress --tau "
               "--use-gripper-action --video-codec --w-open --resume --overwrite",
    "serve": "--api-token --benchmark --host --no-warmup --policy --port --threads",
    "train-base": "--batch-size --chunk-size --dataset --episodes-per-task --lr --max-minutes --steps --threads --resume "
                  "--overwrite --log-with",
    "train-wm": "--clips --dataset --model --pretrained --steps --vae --vae-steps --resume --overwrite --log-with",
    "wm-eval": "--dataset --episodes --steps --strips --wm --overwrite",
    "wm-compare": "--skill-wm --base-wm --demos --skills --episodes --steps --seed",  # was python -m ...worldmodel.compare
    "report": "--preset",  # was python -m world2act.report OUT
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_old_flag_spelling_still_exists(command):
    parser = command_parser(command, importlib.import_module(COMMANDS[command][0]))
    have = functools.reduce(operator.or_, (set(a.option_strings) for a in parser._actions))
    want = set(OLD_FLAGS[command].split()) | {"--out", "--seed", "--device", "--config", "--verbose"}
    assert want <= have, sorted(want - have)


@pytest.mark.parametrize("argv, err", [
    (["world2act.report", "/no/such/run"], "report: --out /no/such/run is not a pipeline folder"),
    (["world2act.worldmodel.compare", "--demos", "d", "--out", "o"], "wm-compare: --skill-wm is required"),
])
def test_pre_registry_module_spellings_still_route_through_the_cli(argv, err):
    """``python -m world2act.report OUT`` and ``python -m world2act.worldmodel.compare ...`` (the
    spellings before ``world2act report`` / ``wm-compare``) parse with the registry's options."""
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and err in r.stderr

"""`world2act compare --grid`: grid validation, and a tiny end-to-end grid whose training stages
are stand-ins and whose evaluation is the real harness on the pure-numpy fake simulator:
pairing on the same episodes, resume (finished cells are reused), a failing cell recorded while
the others finish (issue 19)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from eval_fakes import FakeEnv, NoisyReacher  # noqa: E402
from world2act import World2ActError
from world2act.cli import main as cli_main
from world2act.evaluation import compare_grid
from world2act.evaluation.stats import mcnemar_exact, paired_comparison

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TASKS, TRIALS, SEEDS = [0, 1], 6, [0, 1]
N_EPISODES = len(TASKS) * TRIALS * len(SEEDS)


# ---------------------------------------------------------------------------- fixtures
def _folders(tmp_path):
    comp = tmp_path / "components"
    for name in ("base_policy", "wm", "base_wm", "align", "align_basewm", "demos"):
        (comp / name).mkdir(parents=True, exist_ok=True)
    (comp / "base_policy" / "gain.txt").write_text("0.0")
    return comp


def _grid(tmp_path, cells=None, **shared):
    comp = _folders(tmp_path)
    g = {"benchmark": "libero_object", "tasks": TASKS, "trials": TRIALS, "seeds": SEEDS,
         "policy": str(comp / "base_policy"), "wm": str(comp / "wm"), "align": str(comp / "align"),
         "dataset": str(comp / "demos"), "eval": {"workers": 0},
         "cells": cells if cells is not None else [
             {"name": "base", "method": "base"},
             {"name": "w2a", "method": "world2act", "overrides": ["iterations=3", "num_envs=2", "init_states_per_task=2"]},
             {"name": "w2a-basewm", "method": "world2act",
              "overrides": {"wm": str(comp / "base_wm"), "align": str(comp / "align_basewm")}},
             {"name": "dreamgen", "method": "dreamgen", "overrides": ["finetune.steps=10"]},
         ]}
    g.update(shared)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(g))
    return path


class WeakReacher(NoisyReacher):
    """Steps toward the goal with ``gain`` (from the policy folder) plus seeded unit noise:
    gain 0 is a random walk that reaches the goal now and then, larger gains more often."""

    def __init__(self, gain):
        super().__init__(noise=1.0)
        self.gain = gain

    def predict_action_chunk(self, obs):
        st = torch.as_tensor(obs["observation.state"])
        a = torch.zeros(st.shape[0], self.chunk_size, 7)
        a[:, :, 0] = (self.gain * (st[:, 1] - st[:, 0]) * 10)[:, None] + torch.randn(
            (st.shape[0], self.chunk_size), generator=self._generator)
        return a.clamp(-1, 1)


class FolderPolicy:
    """Evaluation stand-in for a policy folder: a WeakReacher whose gain is the folder's
    ``gain.txt``; its repr is the folder, as the harness records a folder policy."""

    def __init__(self, folder):
        self.folder = str(folder)

    def __call__(self):
        from pathlib import Path

        return WeakReacher(float((Path(self.folder) / "gain.txt").read_text()))

    def __repr__(self):
        return self.folder


@pytest.fixture
def fakes(monkeypatch):
    """Stand-in trainers (post-train → gain 0.3, dreamgen → gain 0.1; or a crash) and the real
    harness on FakeEnv, in this process; counts every call."""
    from world2act.baselines import dreamgen
    from world2act.evaluation import harness
    from world2act.posttrain import loop
    from world2act.utils.manifest import write_manifest

    calls = {"world2act": [], "dreamgen": [], "eval": []}
    state = {"dreamgen_fails": False}
    real_evaluate = harness.evaluate

    def trainer(kind, gain):
        def run(cfg, out, *, device="cpu", resume=False, **kw):
            from pathlib import Path

            calls[kind].append({"out": str(out), "resume": resume, "cfg": cfg})
            if kind == "dreamgen" and state["dreamgen_fails"]:
                raise RuntimeError("simulated IDM divergence")
            if kind == "world2act":
                cfg.camera = "agentview"  # post-train fills in defaults in the config it is given
            out = Path(out)
            (out / "policy").mkdir(parents=True, exist_ok=True)
            (out / "policy" / "gain.txt").write_text(str(gain))
            write_manifest(out, stage=kind, config=cfg, metrics={}, started=time.time())
            return {}
        return run

    def evaluate(policy, benchmark, tasks, trials, seeds, out, **kw):
        calls["eval"].append({"policy": str(policy), "out": str(out), "resume": kw.get("resume")})
        kw.update(workers=0, env_factory=lambda b, t, size, cams: FakeEnv(t, size), latency=False, progress=False)
        return real_evaluate(FolderPolicy(policy), benchmark, tasks, trials, seeds, out, **kw)

    monkeypatch.setattr(loop, "run", trainer("world2act", 0.3))
    monkeypatch.setattr(dreamgen, "run", trainer("dreamgen", 0.1))
    monkeypatch.setattr(harness, "evaluate", evaluate)
    monkeypatch.setenv("WORLD2ACT_THREADS", "1")
    return calls, state


def _episodes(folder):
    return [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]


def _cells(out):
    return {c["name"]: c for c in json.loads((out / "compare.json").read_text())["cells"]}


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("mutate, message", [
    (lambda g, c: g["cells"].append({"name": "x", "method": "dreamgn"}), "cell 5 'x': unknown method 'dreamgn'"),
    (lambda g, c: g["cells"].append({"name": "w2a", "method": "world2act"}), "cell 5 'w2a': duplicate name"),
    (lambda g, c: g.update(benchmark="calvin"), "benchmark 'calvin' has no seeded (Meta-World) or official (LIBERO)"),
    (lambda g, c: g["cells"][2]["overrides"].update(wm=str(c / "nowhere")), "cell 3 'w2a-basewm': wm folder"),
    (lambda g, c: g.update(dataset=str(c / "no_demos")), "cell 4 'dreamgen': dataset folder"),
    (lambda g, c: g.update(align=None), "cell 2 'w2a': method world2act needs 'align'"),
    (lambda g, c: g["cells"][1]["overrides"].append("not_a_key=1"), "cell 2 'w2a': override 'not_a_key=1'"),
    (lambda g, c: g["cells"][1]["overrides"].append("benchmark=metaworld"), "cell 2 'w2a': benchmark is shared"),
    (lambda g, c: g["cells"].pop(0), "no base cell"),
    (lambda g, c: g["cells"].append({"name": "y", "method": "base", "colour": 1}), "cell 5 'y': unknown key(s) ['colour']"),
    (lambda g, c: g.update(trials=0), "--trials must be at least 1"),
    (lambda g, c: g.update(tasks=[0, 99]), "unknown libero_object task 99"),
    (lambda g, c: g.update(reference="nobody"), "reference 'nobody' is not a cell name"),
    (lambda g, c: g.update(eval={"init_states": "test"}), "eval.init_states must be eval or validation"),
])
def test_grid_validation_errors_name_the_entry(tmp_path, capsys, mutate, message):
    path = _grid(tmp_path)
    g = yaml.safe_load(path.read_text())
    mutate(g, tmp_path / "components")
    path.write_text(yaml.safe_dump(g))
    with pytest.raises(World2ActError) as e:
        compare_grid.load_grid(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value)
    # through the CLI: one error line, exit 2, nothing run or written
    out = tmp_path / "out"
    assert cli_main(["compare", "--grid", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_valid_grid_builds_each_commands_config(tmp_path):
    grid = compare_grid.load_grid(_grid(tmp_path, seed=7))
    cells = {c.name: c for c in grid.cells}
    assert [c.name for c in grid.cells] == ["base", "w2a", "w2a-basewm", "dreamgen"]
    assert grid.reference == "base" and grid.tasks == [0, 1] and grid.seeds == [0, 1]
    assert cells["base"].config is None
    w = cells["w2a"].config
    assert (w.iterations, w.num_envs, w.init_states_per_task, w.seed) == (3, 2, 2, 7)
    assert w.tasks == ["0", "1"] and w.benchmark == "libero_object" and w.wm.endswith("components/wm")
    assert cells["w2a-basewm"].config.wm.endswith("base_wm") and cells["w2a-basewm"].config.align.endswith("align_basewm")
    d = cells["dreamgen"].config
    assert d.finetune.steps == 10 and d.dataset.endswith("demos") and d.policy.endswith("base_policy")


# ---------------------------------------------------------------------------- end to end
def test_grid_end_to_end_pairs_same_episodes_and_resumes(tmp_path, fakes, capsys):
    calls, _ = fakes
    path = _grid(tmp_path)
    out = tmp_path / "out"
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 0
    assert len(calls["world2act"]) == 2 and len(calls["dreamgen"]) == 1 and len(calls["eval"]) == 4
    # the Base-WM cell trained with its own world model, in its own folder
    assert calls["world2act"][1]["cfg"].wm.endswith("base_wm")
    assert calls["world2act"][1]["out"] == str(out / "w2a-basewm" / "train")
    res = json.loads((out / "compare.json").read_text())
    assert res["complete"] and res["reference"] == "base" and not res["errors"]
    cells = _cells(out)
    base_eps = _episodes(out / "base" / "eval")
    keys = sorted((str(e["task"]), e["seed"], e["trial"]) for e in base_eps)
    assert len(keys) == N_EPISODES
    for name in ("w2a", "w2a-basewm", "dreamgen"):
        eps = _episodes(out / name / "eval")
        # the same episodes for every cell ...
        assert sorted((str(e["task"]), e["seed"], e["trial"]) for e in eps) == keys
        # ... paired exactly as paired_comparison pairs them
        pc = cells[name]["paired"]
        want = paired_comparison(base_eps, eps)
        assert pc["n"] == N_EPISODES and pc["unpaired_base"] == pc["unpaired_post"] == 0
        for k in ("diff", "ci95", "improved", "regressed", "mcnemar_p", "base_sr", "post_sr"):
            assert pc[k] == pytest.approx(want[k])
        assert pc["mcnemar_p"] == pytest.approx(mcnemar_exact(pc["improved"], pc["regressed"]))
        assert cells[name]["policy"] == str(out / name / "train" / "policy")
        assert cells[name]["train_wall_s"] is not None
    # the less noisy post-trained policy differs from the base somewhere: the pairing is informative
    assert cells["w2a"]["paired"]["improved"] + cells["w2a"]["paired"]["regressed"] > 0
    assert "paired" not in cells["base"] and cells["base"]["policy"].endswith("base_policy")
    assert set(cells["base"]["per_task"]) == {"0", "1"}
    md = (out / "compare.md").read_text()
    assert "| task | base | w2a | w2a-basewm | dreamgen |" in md and "McNemar" in md
    assert (out / "compare.png").stat().st_size > 1000
    # w2a and w2a-basewm differ in their world model: no imagination-budget series
    assert "Imagination budget" not in md and not (out / "compare_scaling.png").exists()
    stdout = capsys.readouterr().out
    assert "pp vs base" in stdout

    # second run: everything is reused, nothing is trained or evaluated again, same numbers
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 0
    assert len(calls["world2act"]) == 2 and len(calls["dreamgen"]) == 1 and len(calls["eval"]) == 4
    again = _cells(out)
    assert {n: (c["trained"] if "trained" in c else None, c["evaluated"]) for n, c in again.items()} == {
        "base": (None, "reused"), "w2a": ("reused", "reused"), "w2a-basewm": ("reused", "reused"),
        "dreamgen": ("reused", "reused")}
    for n in cells:
        assert again[n].get("paired") == cells[n].get("paired") and again[n]["success_rate"] == cells[n]["success_rate"]

    # an interrupted evaluation is resumed with --resume: only its missing episodes run
    ev = out / "w2a" / "eval"
    lines = (ev / "episodes.jsonl").read_text().splitlines()
    (ev / "episodes.jsonl").write_text("\n".join(lines[:5]) + "\n")
    (ev / "eval.json").unlink()
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 0
    assert len(calls["eval"]) == 5 and calls["eval"][-1]["out"] == str(ev) and calls["eval"][-1]["resume"] is True
    assert len(calls["world2act"]) == 2
    assert _cells(out)["w2a"]["paired"] == cells["w2a"]["paired"]


def test_failing_cell_is_recorded_and_the_others_finish(tmp_path, fakes):
    calls, state = fakes
    state["dreamgen_fails"] = True
    cells_cfg = [{"name": "base", "method": "base"},
                 {"name": "dreamgen", "method": "dreamgen"},
                 {"name": "w2a", "method": "world2act"}]
    path = _grid(tmp_path, cells=cells_cfg)
    out = tmp_path / "out"
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 1
    res = json.loads((out / "compare.json").read_text())
    assert not res["complete"]
    assert res["errors"] == {"dreamgen": "RuntimeError: simulated IDM divergence"}
    cells = _cells(out)
    assert cells["dreamgen"]["status"] == "error" and "paired" not in cells["dreamgen"]
    assert "simulated IDM divergence" in cells["dreamgen"]["traceback"]
    # the cell after the failing one still trained, evaluated and was paired
    assert cells["w2a"]["status"] == "ok" and cells["w2a"]["paired"]["n"] == N_EPISODES
    assert not (out / "dreamgen" / "eval").exists()
    md = (out / "compare.md").read_text()
    assert "## Errors" in md and "`dreamgen` (dreamgen): RuntimeError: simulated IDM divergence" in md
    assert "| dreamgen | dreamgen | error |" in md

    # fixed and rerun: only the failed cell runs (resuming its folder); the others are reused
    state["dreamgen_fails"] = False
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 0
    assert len(calls["dreamgen"]) == 2 and len(calls["world2act"]) == 1
    assert [c["out"] for c in calls["eval"]] == [str(out / n / "eval") for n in ("base", "w2a", "dreamgen")]
    cells = _cells(out)
    assert cells["dreamgen"]["status"] == "ok" and cells["dreamgen"]["paired"]["n"] == N_EPISODES
    assert "error" not in cells["dreamgen"]


def test_finished_training_with_other_settings_is_an_error_not_overwritten(tmp_path, fakes):
    calls, _ = fakes
    cells_cfg = [{"name": "base", "method": "base"}, {"name": "w2a", "method": "world2act"}]
    path = _grid(tmp_path, cells=cells_cfg)
    out = tmp_path / "out"
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 0
    g = yaml.safe_load(path.read_text())
    g["cells"][1]["overrides"] = ["iterations=7"]
    path.write_text(yaml.safe_dump(g))
    assert cli_main(["compare", "--grid", str(path), "--out", str(out), "--device", "cpu"]) == 1
    assert len(calls["world2act"]) == 1
    assert "holds a finished run with other settings" in _cells(out)["w2a"]["error"]


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs")
                                            .glob("compare_*.yaml")))
def test_example_grids_are_valid(tmp_path, example):
    """The shipped grids validate once their component folders exist (here: empty stand-ins)."""
    src = Path(__file__).resolve().parents[2] / "configs" / example
    g = yaml.safe_load(src.read_text())
    paths = {v for k, v in g.items() if k in ("policy", "wm", "align", "dataset")}
    for c in g["cells"]:
        paths |= {o.split("=", 1)[1] for o in c.get("overrides") or [] if o.split("=", 1)[0] in ("wm", "align")}
        paths |= {c["policy"]} if c.get("policy") else set()
    for p in paths:
        (tmp_path / p).mkdir(parents=True, exist_ok=True)
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        grid = compare_grid.load_grid(src)
    finally:
        os.chdir(cwd)
    assert grid.reference == "base" and grid.cells[0].method == "base"
    assert {c.method for c in grid.cells} >= {"base", "dreamgen"}
    if example == "compare_metaworld.yaml":
        assert grid.benchmark == "metaworld" and len(grid.tasks) == 2 and grid.trials * len(grid.seeds) == 50


def test_shared_options_config_and_overrides_reach_the_grid(tmp_path, fakes):
    calls, _ = fakes
    path = _grid(tmp_path, cells=[{"name": "base", "method": "base"}, {"name": "w2a", "method": "world2act"}])
    out = tmp_path / "out"
    # --config is the grid; key=value overrides change its shared keys; --seed is the training seed
    assert cli_main(["compare", "--config", str(path), "--out", str(out), "--seed", "5", "trials=2", "seeds=[3]",
                     "eval.video_episodes=0"]) == 0
    assert calls["world2act"][0]["cfg"].seed == 5
    eps = _episodes(out / "base" / "eval")
    assert len(eps) == len(TASKS) * 2 and {e["seed"] for e in eps} == {3}
    res = json.loads((out / "compare.json").read_text())
    assert res["trials"] == 2 and res["seeds"] == [3]
    with pytest.raises(World2ActError, match="unknown grid key 'cellz'"):
        compare_grid.load_grid(path, overrides=["cellz=1"])
    with pytest.raises(World2ActError, match="cells are set in the file"):
        compare_grid.load_grid(path, overrides=["cells=[]"])


def test_budget_series_groups_cells_that_differ_only_in_budget(tmp_path):
    """Fig. 5b: cells of one method with the same components and tasks form a series sorted by
    imagined trajectories per task; another world model, other tasks or one budget do not."""
    def cell(name, method, n=None, rate=0.5, **cfg):
        c = {"name": name, "method": method, "status": "ok", "success_rate": rate,
             "ci95": None if rate is None else [rate - 0.1, rate + 0.1]}
        if n is not None:
            c["config"] = {"policy": "p", "wm": "wm", "tasks": ["0"], "init_states_per_task": n, **cfg}
            c["paired"] = None if rate is None else {"n": 10, "diff": rate - 0.4, "ci95": [-0.1, 0.3]}
        return c

    res = {"benchmark": "metaworld", "reference": "base", "cells": [
        cell("base", "base", rate=0.4), cell("w2a-32", "world2act", 32, 0.6), cell("w2a-4", "world2act", 4, 0.45),
        cell("w2a-basewm", "world2act", 8, wm="base_wm"), cell("w2a-cross", "world2act", 8, tasks=["1"]),
        cell("dg-8", "dreamgen", 8, 0.3), cell("dg-16", "dreamgen", 16, 0.2), cell("dg-x", "dreamgen", 16, rate=None)]}
    series = compare_grid.budget_series(res)
    assert list(series) == ["world2act", "dreamgen"]
    assert [(p["n"], p["name"]) for p in series["world2act"]] == [(4, "w2a-4"), (32, "w2a-32")]
    assert [p["name"] for p in series["dreamgen"]] == ["dg-8", "dg-16"]
    md = "\n".join(compare_grid.budget_markdown(res))
    assert "| world2act | 4 | w2a-4 | 45.0 | +5.0 | -10.0 … +30.0 |" in md
    assert compare_grid.budget_plot(res, tmp_path / "s.png") and (tmp_path / "s.png").stat().st_size > 1000
    res["cells"] = res["cells"][:4]
    res["cells"][2]["config"]["wm"] = "other"
    assert compare_grid.budget_series(res) == {} and not compare_grid.budget_plot(res, tmp_path / "t.png")

"""Foundation: CLI dispatch, config overrides, atomic writes, manifests."""
import dataclasses
import subprocess
import sys

import pytest

from world2act import World2ActError
from world2act.cli import COMMANDS, main
from world2act.utils.config import apply_overrides, load_config
from world2act.utils.io import atomic_write, prepare_out_dir, read_json, write_json
from world2act.utils.manifest import config_hash, manifest_matches, write_manifest


@dataclasses.dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclasses.dataclass
class Cfg:
    name: str = "a"
    tasks: list[int] = dataclasses.field(default_factory=lambda: [0])
    train: Inner = dataclasses.field(default_factory=Inner)


def test_overrides_coerce_types_and_reject_unknown_keys():
    cfg = apply_overrides(Cfg(), ["train.lr=3e-4", "train.steps=5", "tasks=[1,2]"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.steps == 5 and cfg.tasks == [1, 2]
    with pytest.raises(World2ActError, match="unknown key"):
        apply_overrides(Cfg(), ["train.nope=1"])
    with pytest.raises(World2ActError, match="key=value"):
        apply_overrides(Cfg(), ["train.lr"])


def test_load_config_yaml_then_explicit(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: fromfile\ntrain: {steps: 7}\n")
    cfg = load_config(Cfg, p, ["train.lr=0.5"], name=None, tasks="3,4")
    assert (cfg.name, cfg.tasks, cfg.train.steps, cfg.train.lr) == ("fromfile", [3, 4], 7, 0.5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(World2ActError, match="bad.yaml"):
        load_config(Cfg, bad)


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left
    atomic_write(tmp_path / "y.txt", "hi")
    assert (tmp_path / "y.txt").read_text() == "hi"


def test_read_json_errors_name_the_file(tmp_path):
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(World2ActError, match="broken.json"):
        read_json(tmp_path / "broken.json")
    with pytest.raises(World2ActError, match="missing.json"):
        read_json(tmp_path / "missing.json")


def test_prepare_out_dir_refuses_non_empty(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(World2ActError, match="--resume"):
        prepare_out_dir(tmp_path)
    assert prepare_out_dir(tmp_path, resume=True) == tmp_path and (tmp_path / "f").exists()
    prepare_out_dir(tmp_path, overwrite=True)
    assert not (tmp_path / "f").exists()


def test_manifest_roundtrip(tmp_path):
    write_manifest(tmp_path, stage="x", config=Cfg())
    assert manifest_matches(tmp_path, Cfg())
    assert not manifest_matches(tmp_path, Cfg(name="b"))
    assert config_hash(Cfg()) != config_hash(Cfg(name="b"))


def test_cli_lists_every_contract_command(capsys):
    assert set(COMMANDS) == {"collect", "segment", "train-wm", "imagine", "train-base", "align",
                             "post-train", "dreamgen", "diagnose", "wm-eval", "eval", "eval-compare", "compare", "serve",
                             "pipeline", "wm-compare", "report"}
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_cli_unknown_command_exits_nonzero():
    r = subprocess.run([sys.executable, "-m", "world2act", "frobnicate"], capture_output=True, text=True)
    assert r.returncode != 0 and "unknown command" in r.stderr

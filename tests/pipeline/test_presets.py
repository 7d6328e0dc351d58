"""Every preset's stage arguments parse with their command's own parser (a misspelt flag in a
preset would otherwise surface only when that stage runs, possibly an hour into `make demo`)."""
import importlib

import pytest

from world2act.cli import COMMANDS, command_parser
from world2act.presets import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_stage_arguments_parse(name):
    stages, meta = PRESETS[name]()
    assert meta.get("description")
    names = [s.name for s in stages]
    assert len(set(names)) == len(names)
    for st in stages:
        assert set(st.after) <= set(names[:names.index(st.name)]), (name, st.name)  # dependency order
        parser = command_parser(st.command, importlib.import_module(COMMANDS[st.command][0]))
        args = parser.parse_args([a.replace("{out}", "/tmp/x") for a in st.args] + ["--out", "/tmp/x/" + st.name])
        for ov in args.overrides:
            assert "=" in ov, (name, st.name, ov)


def test_metaworld_preset_budgets_are_steps():
    stages, _ = PRESETS["metaworld"]()
    by = {s.name: s.args for s in stages}
    assert "--steps" in by["base"] and "--steps" in by["wm"] and "--vae-steps" in by["wm"]
    assert by["eval-base"][by["eval-base"].index("--benchmark") + 1] == "metaworld"

import pytest

from world2act.skills.decompose import (KINDS, VOCABULARY, UnparseableInstruction, decompose_instruction, schema_of,
                                        split_clauses)

SUITES = ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]


def _libero_instructions():
    from world2act.envs.libero_config import ensure_libero_config

    ensure_libero_config()
    from libero.libero import benchmark

    d = benchmark.get_benchmark_dict()
    out = []
    for s in SUITES:
        b = d[s]()
        out += [(s, i, b.get_task(i).language) for i in range(b.n_tasks)]
    return out


def _check(steps, instruction):
    assert steps, instruction
    held = None
    for s in steps:
        assert s.verb in VOCABULARY and s.kind in KINDS, (instruction, s)
        if s.verb in ("pick", "place", "open", "close", "turn on", "turn off"):
            assert s.kind == VOCABULARY[s.verb]
        assert s.prompt.startswith(s.verb) or s.prompt.startswith("pick up"), (instruction, s)
        words = s.prompt.split()
        assert len(words) >= 2 and words[-1] not in ("the", "a", "it", "them", "and"), (instruction, s)
        # grasp/release alternate: never two picks in a row, never a place without a pick
        if s.kind == "grasp":
            assert held is None, (instruction, steps)
            held = s
        elif s.kind == "release":
            assert held is not None, (instruction, steps)
            held = None


def test_every_libero_instruction_parses():
    items = _libero_instructions()
    assert len(items) == 130
    for suite, i, lang in items:
        steps = decompose_instruction(lang)
        _check(steps, lang)
        if suite in ("libero_object", "libero_spatial"):
            assert schema_of(steps) == ["pick", "place"], lang


def test_every_metaworld_instruction_parses():
    from world2act.envs.metaworld_instructions import INSTRUCTIONS

    assert len(INSTRUCTIONS) == 50
    for name, lang in INSTRUCTIONS.items():
        steps = decompose_instruction(lang)
        _check(steps, lang)
    assert schema_of(decompose_instruction(INSTRUCTIONS["pick-place-v3"])) == ["pick", "place"]
    assert schema_of(decompose_instruction(INSTRUCTIONS["door-open-v3"])) == ["open"]


@pytest.mark.parametrize("instruction,expected", [
    ("put both the alphabet soup and the tomato sauce in the basket",
     ["pick up the alphabet soup", "place the alphabet soup in the basket",
      "pick up the tomato sauce", "place the tomato sauce in the basket"]),
    ("pick up the black bowl between the plate and the ramekin and place it on the plate",
     ["pick up the black bowl between the plate and the ramekin", "place the black bowl on the plate"]),
    ("turn on the stove and put the moka pot on it",
     ["turn on the stove", "pick up the moka pot", "place the moka pot on the stove"]),
    ("put the black bowl in the bottom drawer of the cabinet and close it",
     ["pick up the black bowl", "place the black bowl in the bottom drawer of the cabinet",
      "close the bottom drawer of the cabinet"]),
    ("put the white mug on the left plate and put the yellow and white mug on the right plate",
     ["pick up the white mug", "place the white mug on the left plate", "pick up the yellow and white mug",
      "place the yellow and white mug on the right plate"]),
    ("open the top drawer and put the bowl inside",
     ["open the top drawer", "pick up the bowl", "place the bowl inside the top drawer"]),
    ("put both moka pots on the stove",
     ["pick up one moka pot", "place the moka pot on the stove", "pick up the other moka pot",
      "place the other moka pot on the stove"]),
    ("stack the left bowl on the right bowl and place them in the tray",
     ["pick up the left bowl", "stack the left bowl on the right bowl", "pick up the stacked bowls",
      "place the stacked bowls in the tray"]),
    ("pick up the stick and pull the container with it", ["pick up the stick", "pull the container with the stick"]),
    ("Pick up the cup, then place it on the plate.", ["pick up the cup", "place the cup on the plate"]),
    ("push the plate to the front of the stove", ["push the plate to the front of the stove"]),
])
def test_expected_decompositions(instruction, expected):
    assert [s.prompt for s in decompose_instruction(instruction)] == expected


def test_split_keeps_conjoined_noun_phrases():
    assert split_clauses("put the yellow and white mug in the microwave and close it") == [
        "put the yellow and white mug in the microwave", "close it"]


@pytest.mark.parametrize("bad", ["", "dance around the table", "pick up", "put it", "close it"])
def test_unparseable_raises_clear_error(bad):
    with pytest.raises(UnparseableInstruction):
        decompose_instruction(bad)

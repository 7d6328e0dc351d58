import pytest

from world2act import World2ActError
from world2act.worldmodel.data import (ClipRecord, episode_rows, first_sources_per_instruction, prompt_windows,
                                    skill_windows, split_by_source)


def test_exact_clip_one_window():
    w = skill_windows(65, 17, 4)
    assert len(w) == 1 and w[0][0] == list(range(0, 65, 4)) and w[0][1] == 17


def test_short_clip_padded_with_last_frame():
    rows, real = skill_windows(30, 17, 4)[0]
    assert rows[:8] == list(range(0, 29, 4)) and rows[8:] == [29] * 9 and real == 8


def test_long_clip_several_windows_share_boundary():
    w = skill_windows(150, 17, 4)
    starts = [rows[0] for rows, _ in w]
    assert starts == [0, 64, 128]  # 128 + 16 <= 149: the third window has one real latent chunk
    assert w[0][0][-1] == w[1][0][0]  # shared boundary frame, like a rollout
    assert w[2][1] == 6 and w[2][0][-1] == 149
    assert len(skill_windows(140, 17, 4)) == 2  # tail 128..139 is shorter than one latent chunk: dropped


def test_shorter_than_one_latent_chunk():
    with pytest.raises(World2ActError, match="shorter than one latent chunk"):
        skill_windows(16, 17, 4)
    assert skill_windows(16, 17, 4, "skip") == []
    rows, real = skill_windows(16, 17, 4, "pad")[0]
    assert real == 4 and rows[-1] == 15


def test_episode_resampling():
    rows = episode_rows(201, 17)
    assert len(rows) == 17 and rows[0] == 0 and rows[-1] == 200
    assert all(12 <= b - a <= 13 for a, b in zip(rows, rows[1:]))


def test_split_holds_out_whole_demos():
    recs = [ClipRecord(i, src, f"p{k}", f"task{src % 2}", [0] * 17, 17, 0, 4.0)
            for i, (src, k) in enumerate([(s, k) for s in range(10) for k in range(2)])]
    train, val = split_by_source(recs, 0.2)
    assert train.isdisjoint(val) and train | val == set(range(10))
    assert len(val) == 2 and {s % 2 for s in val} == {0, 1}  # one per instruction


def test_train_demos_keeps_the_first_n_per_instruction_and_the_same_held_out():
    recs = [ClipRecord(i, src, "p", f"task{src % 2}", [0] * 17, 17, 0, 4.0) for i, src in enumerate(range(10))]
    train, val = split_by_source(recs, 0.2)
    two = first_sources_per_instruction(recs, train, 2)
    assert two == {0, 2, 1, 3}  # task0: 0, 2 (of 0, 2, 4, 6); task1: 1, 3 (of 1, 3, 5, 7)
    assert two.isdisjoint(val) and first_sources_per_instruction(recs, train, 0) == train
    assert first_sources_per_instruction(recs, train, 99) == train
    with pytest.raises(World2ActError, match="train_demos"):
        first_sources_per_instruction(recs, train, -1)


def test_prompt_windows():
    recs = [ClipRecord(0, 0, "pick", "t", [0], 1, 0, 4.0, 0), ClipRecord(0, 0, "pick", "t", [0], 1, 0, 4.0, 1),
            ClipRecord(1, 0, "place", "t", [0], 1, 0, 4.0, 0)]
    assert prompt_windows(recs) == {"pick": 2, "place": 1}


class _FakeDS:
    root = "fake"

    def __init__(self, metas):
        self.metas = metas
        self.num_episodes = len(metas)

    def episode_meta(self, i):
        return self.metas[i]


def test_build_clips_records_source_rows_and_rejects_missing_prompts():
    from world2act.worldmodel.data import build_clips

    ds = _FakeDS([dict(task="pick up the bowl", length=100, source_episode=7, frame_from=30, instruction="x")])
    (a, b) = build_clips(ds, "skills", 17, 4)
    assert a.source_episode == 7 and a.source_start == 30 and b.source_start == 30 + 64 and b.window == 1
    with pytest.raises(World2ActError, match="episode 0 has no prompt"):
        build_clips(_FakeDS([dict(task=" ", length=100)]), "skills", 17, 4)
    with pytest.raises(World2ActError, match="--clips"):
        build_clips(ds, "frames", 17, 4)

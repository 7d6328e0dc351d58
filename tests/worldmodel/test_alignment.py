import pytest

from world2act import World2ActError
from world2act.worldmodel.alignment import (actions_per_latent_frame, clip_control_steps, latent_action_ranges,
                                            latent_frame_of_step, num_latent_frames)


def test_defaults_17_frames_stride_4():
    assert num_latent_frames(17) == 5
    assert actions_per_latent_frame(4) == 16
    assert latent_action_ranges(17, 4) == [(0, 0), (0, 16), (16, 32), (32, 48), (48, 64)]
    assert clip_control_steps(17, 4) == 64


def test_ranges_tile_the_clip_and_match_frames():
    for T, s in [(17, 4), (9, 2), (33, 1), (5, 3)]:
        r = latent_action_ranges(T, s)
        assert len(r) == num_latent_frames(T)
        assert r[0] == (0, 0)  # latent frame 0 = first frame alone, no actions
        covered = [t for a, b in r[1:] for t in range(a, b)]
        assert covered == list(range(clip_control_steps(T, s)))
        for j in range(1, len(r)):
            # latent frame j encodes pixel frames 4j-3..4j; its actions end at the row of frame 4j
            assert r[j][1] == 4 * j * s and r[j][0] == 4 * (j - 1) * s
            assert latent_frame_of_step(r[j][0], s) == j and latent_frame_of_step(r[j][1] - 1, s) == j


def test_concatenated_rollout_mapping():
    n = 3  # three 17-frame clips sharing boundary frames -> 1 + 16n frames, 1 + 4n latents
    assert num_latent_frames(1 + 16 * n) == 1 + 4 * n
    assert latent_action_ranges(1 + 16 * n, 4)[-1] == (16 * (4 * n - 1), 64 * n)


@pytest.mark.parametrize("bad", [0, 2, 16, 18])
def test_bad_frame_counts(bad):
    with pytest.raises(World2ActError, match="1 \\+ 4"):
        num_latent_frames(bad)


def test_bad_stride():
    with pytest.raises(World2ActError):
        actions_per_latent_frame(0)


def test_latent_action_chunks():
    import numpy as np

    from world2act.worldmodel.alignment import latent_action_chunks

    acts = np.arange(100, dtype=np.float32)[:, None].repeat(7, 1)
    chunks, valid = latent_action_chunks(acts, start=50)
    assert chunks.shape == (4, 16, 7) and valid.shape == (4, 16)
    assert chunks[0, 0, 0] == 50 and chunks[1, 0, 0] == 66 and valid[:3].all()
    assert valid[3].sum() == 100 - (50 + 48) and (chunks[3, 2:, 0] == 99).all()
    with pytest.raises(World2ActError):
        latent_action_chunks(acts, start=100)

import numpy as np
import pytest

from world2act.skills.contacts import ContactEvent, ContactParams, detect_events
from world2act.skills.decompose import decompose_instruction
from world2act.skills.stats import distribution_report, length_stats, median_share, plot_lengths
from world2act.skills.sync import EpisodeSegmentation, align_schema, boundaries_from_indices, sync_summary

from skills_synth import PNP, width_profile

C = lambda i, e: ContactEvent("close", i, e, 0.5)  # noqa: E731
O = lambda i, e: ContactEvent("open", i, e, 0.5)  # noqa: E731


def test_pick_and_place_boundaries_module_example():
    al = align_schema([C(58, 61), O(121, 124)], decompose_instruction(PNP), 150)
    assert al.ok and al.boundaries == [0, 62, 150]


def test_two_object_task_from_width_signal():
    steps = decompose_instruction("put both the alphabet soup and the tomato sauce in the basket")
    w = width_profile(300, [(60, 120, 0.063), (200, 250, 0.06)])
    ev = detect_events(w, ContactParams(tau=0.1, w_open=0.08)).events
    al = align_schema(ev, steps, 300)
    assert al.ok
    b = al.boundaries
    assert len(b) == 5 and b[0] == 0 and b[-1] == 300 and all(x < y for x, y in zip(b, b[1:]))
    # pick ends once the fingers closed (just after 60), place once they re-opened (just after 120)
    assert 60 < b[1] <= 65 and 120 < b[2] <= 125 and 200 < b[3] <= 205


def test_hold_to_end_and_nonprehensile_last_step():
    assert align_schema([C(20, 23)], decompose_instruction("pick up the puck and place it at the goal"), 60).boundaries == [0, 24, 60]
    steps = decompose_instruction("put the black bowl in the bottom drawer of the cabinet and close it")
    assert align_schema([C(30, 33), O(80, 83)], steps, 150).boundaries == [0, 34, 84, 150]  # drawer pushed shut
    assert align_schema([C(30, 33), O(80, 83), C(100, 103), O(120, 122)], steps, 150).boundaries == [0, 34, 84, 150]
    one = decompose_instruction("push the plate to the front of the stove")
    assert align_schema([], one, 50).boundaries == [0, 50]


def test_unsynchronised_reasons():
    steps = decompose_instruction(PNP)
    al = align_schema([], steps, 100)
    assert not al.ok and al.reason == "missing_events"
    al = align_schema([C(10, 12), O(20, 22), C(40, 42), O(70, 72)], steps, 100, max_ignored_retries=0)
    assert not al.ok and al.reason == "extra_events"
    four = [C(10 + 20 * k, 12 + 20 * k) if j == 0 else O(18 + 20 * k, 19 + 20 * k) for k in range(4) for j in (0, 1)]
    al = align_schema(four, steps, 100)  # more than two retries: not explained away
    assert not al.ok and al.reason == "extra_events"
    al = align_schema([C(10, 12), O(20, 22)], steps, 100, min_clip_frames=20)
    assert not al.ok and al.reason == "clip_too_short"
    # a non-last interaction without a closure cannot be bounded
    al = align_schema([C(50, 52), O(90, 92)], decompose_instruction("turn on the stove and put the moka pot on it"), 120)
    assert not al.ok and al.reason == "missing_events"


def test_retried_grasp_is_ignored():
    steps = decompose_instruction(PNP)
    ev = [C(20, 23), O(40, 42), C(60, 63), O(120, 123)]
    strict = align_schema(ev, steps, 150, max_ignored_retries=0)
    assert not strict.ok and strict.reason == "extra_events"
    al = align_schema(ev, steps, 150)
    assert al.ok and al.boundaries == [0, 64, 150] and al.ignored_retries == 1 and "20-40" in al.detail
    # success reached while holding after a retry: close, open, close
    assert align_schema(ev[:3], steps, 150).boundaries == [0, 64, 150]
    # with hand positions, the cycle that carried least is the one ignored
    two = decompose_instruction("put both the alphabet soup and the tomato sauce in the basket")
    ev2 = [C(10, 12), O(30, 32), C(50, 52), O(70, 72), C(90, 92), O(110, 112)]
    pos2 = np.zeros((150, 3))
    pos2[70:, 0] = 0.4  # only cycles 2 (50-70) and 3 (90-110) carried something
    pos2[110:, 1] = 0.4
    al2 = align_schema(ev2, two, 150, positions=pos2)
    assert al2.ok and al2.boundaries == [0, 53, 73, 93, 150] and "10-30" in al2.detail


def test_boundaries_from_indices():
    assert boundaries_from_indices([61, 124], 150).boundaries == [0, 62, 150]
    assert not boundaries_from_indices([3, 124], 150, min_clip_frames=8).ok


def test_sync_summary_counts():
    steps = decompose_instruction(PNP)
    rs = [EpisodeSegmentation(i, 100, PNP, True, steps=list(steps), boundaries=[0, 50, 100]) for i in range(7)]
    rs += [EpisodeSegmentation(7, 100, PNP, False, "missing_events"), EpisodeSegmentation(8, 90, "x", False, "extra_events"),
           EpisodeSegmentation(9, 90, "x", False, "missing_events")]
    s = sync_summary(rs)
    assert s["episodes_in"] == 10 and s["episodes_synced"] == 7 and s["sync_rate"] == 0.7 and s["clips_out"] == 14
    assert s["discard_reasons"] == {"extra_events": 1, "missing_events": 2}
    assert s["per_task"]["x"] == {"episodes": 2, "synced": 0, "sync_rate": 0.0}
    assert sync_summary([])["sync_rate"] == 0.0


def test_length_statistics_and_plot(tmp_path):
    assert median_share([100, 100, 124, 126, 50]) == pytest.approx(0.6)
    before = [100, 140, 220, 400, 90, 105]
    after = [48, 52, 50, 55, 60, 45]
    rep = distribution_report(before, after, fps=20)
    assert rep["after"]["median_share"] == 1.0 and rep["before"]["median_share"] < 1.0
    assert rep["median_share_gain"] > 0 and sum(rep["histogram"]["after"]) == 6
    assert length_stats([])["count"] == 0
    p1, p2 = plot_lengths(before, after, tmp_path / "a.png"), plot_lengths(before, after, tmp_path / "b.png")
    assert p1.read_bytes()[:4] == b"\x89PNG" and p1.read_bytes() == p2.read_bytes()

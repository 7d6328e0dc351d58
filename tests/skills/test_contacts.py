import numpy as np
import pytest

from world2act import World2ActError
from world2act.skills.contacts import (ContactParams, closure_signal, debounce, detect_events, params_for,
                                       robust_open_width)

from skills_synth import width_profile

LIB = ContactParams(tau=0.1, w_open=0.08)


def test_closure_signal_values():
    c = closure_signal(np.array([0.08, 0.063, 0.005, 0.0, 0.04]), 0.08)
    np.testing.assert_allclose(c, [0.0, 0.2125, 0.9375, 1.0, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        closure_signal(np.array([0.08, np.nan]), 0.08)
    with pytest.raises(ValueError):
        closure_signal(np.zeros((3, 2)), 0.08)


def test_debounce_fills_gaps_and_drops_blips():
    m = np.zeros(40, bool)
    m[2:4] = True  # 2-frame blip, 6 frames before the next run: dropped
    m[10:20] = True
    m[22:30] = True  # gap of 2 (< 4): merged with the previous run
    out = debounce(m, min_duration=4, min_gap=4)
    assert not out[:10].any()
    assert out[10:30].all() and not out[30:].any()
    # gaps at the edges are never filled
    m2 = np.zeros(10, bool)
    m2[2:10] = True
    assert not debounce(m2, 4, 4)[:2].any()


def test_docstring_example():
    w = np.full(80, 0.08)
    w[10:15] = np.linspace(0.08, 0.063, 5)
    w[15:60] = 0.063
    w[60:65] = np.linspace(0.063, 0.08, 5)
    res = detect_events(w, LIB)
    assert [(e.kind, e.index, e.end) for e in res.events] == [("close", 12, 14), ("open", 63, 64)]


def test_wide_object_needs_low_tau():
    # a can only closes the gripper to c = 0.21: tau 0.3 (too high for LIBERO) misses it
    w = width_profile(100, [(30, 70, 0.063)])
    assert len(detect_events(w, LIB).events) == 2
    assert detect_events(w, ContactParams(tau=0.3, w_open=0.08)).events == []


def test_chattering_does_not_create_events():
    w = width_profile(120, [(30, 90, 0.03)])
    w[50:52] = 0.0795  # a 2-frame opening glitch while holding
    w[100:102] = 0.05  # a 2-frame squeeze after release
    res = detect_events(w, LIB)
    assert [e.kind for e in res.events] == ["close", "open"]
    assert res.raw_contact[100:102].all() and not res.contact[100:102].any()


def test_half_open_start_is_not_a_grasp():
    w = width_profile(100, [(40, 80, 0.01)], start=0.02, ramp=8)
    res = detect_events(w, LIB)
    assert [(e.kind, e.index) for e in res.events][0] == ("close", 40)
    assert len(res.events) == 2 and res.dropped and "frame 0" in res.dropped[0]


def test_hold_to_end_has_no_release_metaworld():
    w = width_profile(60, [(20, None, 0.4)], w_open=1.0)
    res = detect_events(w, params_for("metaworld"))
    assert [e.kind for e in res.events] == ["close"]
    assert res.events[0].closure == pytest.approx(0.6, abs=0.01)


def test_gripper_action_corroboration():
    T = 100
    w = width_profile(T, [(40, 70, 0.03)])
    acts = np.zeros((T, 7))
    acts[:, -1] = -1.0  # never commanded to close: the width change is not a grasp
    p = ContactParams(tau=0.1, w_open=0.08, use_gripper_action=True)
    res = detect_events(w, p, acts)
    assert res.events == [] and "no close command" in res.dropped[0]
    acts[35:70, -1] = 1.0
    assert [e.kind for e in detect_events(w, p, acts).events] == ["close", "open"]
    with pytest.raises(ValueError, match="actions"):
        detect_events(w, p, None)


def test_params_and_calibration():
    assert params_for("libero_10").tau == 0.1 and params_for("libero_object").w_open == 0.08
    assert params_for("metaworld").tau == 0.3
    assert params_for("libero_goal", tau=0.2).tau == 0.2
    with pytest.raises(World2ActError, match="unknown benchmark"):
        params_for("robocasa")
    with pytest.raises(World2ActError):
        ContactParams(tau=1.5, w_open=0.08)
    w = np.concatenate([np.full(500, 0.0795), [0.2], np.full(100, 0.01)])  # one spike is ignored
    assert robust_open_width(w) == pytest.approx(0.0795)

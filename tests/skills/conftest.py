"""Fixtures of the skill-decomposition tests."""
import pytest

from skills_synth import make_episode, pnp_episode, width_profile, PNP


@pytest.fixture
def demo_dataset(tmp_path):
    """A 7-episode libero_object-like dataset: 4 clean pick-and-place, 1 with no closure, 1 retried grasp,
    1 with four grasp cycles (more than two retries: not synchronised)."""
    from world2act.data import DatasetSpec, LeRobotDatasetWriter

    spec = DatasetSpec(fps=20, action_dim=7, state_dim=8, cameras=("agentview",), image_size=(16, 16),
                       benchmark="libero_object", robot_type="panda", sim_state_dim=5)
    root = tmp_path / "demos"
    eps = [pnp_episode(90 + 5 * k, 30 + k, 65 + 2 * k, meta={"task_id": 0, "seed": k}) for k in range(4)]
    eps.append(make_episode(PNP, width_profile(80, []), meta={"task_id": 0, "seed": 4}))
    eps.append(make_episode(PNP, width_profile(120, [(20, 35, 0.001), (50, 90, 0.063)]), meta={"task_id": 0, "seed": 5}))
    eps.append(make_episode(PNP, width_profile(200, [(20, 35, 0.001), (50, 70, 0.063), (90, 110, 0.06), (130, 160, 0.06)]),
                            meta={"task_id": 0, "seed": 6}))
    with LeRobotDatasetWriter(root, spec) as w:
        for e in eps:
            w.add_episode(e)
    return root

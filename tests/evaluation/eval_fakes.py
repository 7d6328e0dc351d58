"""Pure-numpy stand-ins for a simulator and a policy (picklable, for spawned eval workers)."""
from __future__ import annotations

import numpy as np
import torch

from world2act.envs.base import ManipulationEnv
from world2act.policies.base import Policy


class FakeEnv(ManipulationEnv):
    """A point on a line must reach a goal; the goal comes from the init state / seed.

    ``crash`` = set of (task, init_state_index) pairs whose episodes raise inside ``step``.
    """

    action_dim = 7
    state_dim = 8
    cameras = ("agentview", "wrist")
    settle_steps = 0
    control_hz = 20.0
    num_init_states = 50
    benchmark = "libero_object"

    def __init__(self, task_id, camera_size=(32, 32), crash=()):
        self.task_id = task_id
        self.task_name = f"fake_{task_id}"
        self.instruction = f"reach goal {task_id}"
        self.max_steps = 40
        self.camera_size = camera_size
        self.crash = set(crash)
        self.pos = 0.0
        self.goal = 0.0
        self.init = None
        self.t = 0

    def reset(self, *, seed=None, init_state_index=None):
        if (seed is None) == (init_state_index is None):
            raise ValueError("give exactly one of seed / init_state_index")
        rng = np.random.default_rng(1000 * int(self.task_id) + (init_state_index if seed is None else seed))
        self.init = init_state_index
        self.pos, self.goal, self.t = 0.0, float(rng.uniform(-1, 1)), 0

    def step(self, action):
        self.t += 1
        if (self.task_id, self.init) in self.crash and self.t == 5:
            raise RuntimeError(f"simulated physics blow-up in task {self.task_id} init {self.init}")
        self.pos += 0.1 * float(np.clip(action[0], -1, 1))

    def proprio(self):
        s = np.zeros(8, np.float32)
        s[0], s[1] = self.pos, self.goal
        return s

    def gripper_width(self):
        return 0.08

    def render(self, cameras, size):
        v = int(np.clip(128 + 100 * self.pos, 0, 255))
        return {c: np.full((size[0], size[1], 3), v, np.uint8) for c in cameras}

    def is_success(self):
        return abs(self.pos - self.goal) < 0.05

    def get_sim_state(self):
        return np.array([self.pos, self.goal])

    def set_sim_state(self, state):
        self.pos, self.goal = float(state[0]), float(state[1])

    def privileged(self):
        return {"goal": self.goal}


class NoisyReacher(Policy):
    """Moves toward the goal (read from the state) with seeded noise: success is random but
    fully determined by the policy seed."""

    name = "noisy-reacher"

    def __init__(self, chunk_size=4, noise=1.5):
        super().__init__()
        self.action_dim, self.state_dim, self.chunk_size = 7, 8, chunk_size
        self.cameras, self.image_size, self.benchmark = ("agentview",), (32, 32), "libero_object"
        self.noise = noise
        self.calls = 0

    def predict_action_chunk(self, obs):
        assert obs["observation.images.agentview"].shape[1:] == (32, 32, 3)
        st = torch.as_tensor(obs["observation.state"])
        d = (st[:, 1] - st[:, 0]) * 10
        a = torch.zeros(st.shape[0], self.chunk_size, 7)
        a[:, :, 0] = d[:, None] + self.noise * torch.randn((st.shape[0], self.chunk_size), generator=self._generator)
        return a.clamp(-1, 1)


class CrashingPolicy(NoisyReacher):
    """Raises on the episodes whose goal is above 0.8."""

    def predict_action_chunk(self, obs):
        if float(obs["observation.state"][0, 1]) > 0.8:
            raise ValueError("policy exploded")
        return super().predict_action_chunk(obs)


def fake_env_factory(benchmark, task, camera_size, cameras):
    return FakeEnv(task, camera_size, crash={(1, 3)})


def make_noisy_reacher():
    return NoisyReacher()


def make_crashing_policy():
    return CrashingPolicy()


def make_wrong_dim_policy():
    p = NoisyReacher()
    p.action_dim = 4
    return p


class SlowEnv(FakeEnv):
    """Episodes of 0.3-1.5 s (2-10 steps), so 40 of them outlast the Ctrl-C test's signal even
    on a loaded machine (at 0.01 s per step the whole run took ~2 s and could finish first)."""

    def step(self, action):
        import time

        time.sleep(0.15)
        super().step(action)


def slow_env_factory(benchmark, task, camera_size, cameras):
    return SlowEnv(task, camera_size)


def dying_env_factory(benchmark, task, camera_size, cameras):
    return DyingEnv(task, camera_size)


class DyingEnv(FakeEnv):
    """Kills its worker process (like a segfault) in task 1, init state 2."""

    def step(self, action):
        import os

        if self.task_id == 1 and self.init == 2:
            os._exit(1)
        super().step(action)

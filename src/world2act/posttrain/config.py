"""Configuration of Stage 2 latent action post-training (paper Sec. 4.2)."""
from __future__ import annotations

import dataclasses

from world2act import World2ActError


@dataclasses.dataclass
class PostTrainConfig:
    """Everything ``world2act post-train`` needs.

    Attributes:
        policy: frozen base policy folder.
        wm: world-model folder (Skill-WM).
        align: Stage-1 folder (f_v, f_a, g_a and the action normaliser).
        benchmark / tasks: where the on-policy rollouts run (LIBERO task ids or MW names).
        init_states_per_task: imagined trajectories per task (the paper's "+50" counts these);
            drawn from the post-training seed range, disjoint from evaluation init states.
        num_envs: N parallel rollouts per update (all from one task: positives = same env,
            negatives = the other initial states of that task).
        iterations: number of rollout+update rounds.
        epochs_per_rollout: gradient steps per round of rollouts (1 = strictly on-policy).
        lr / weight_decay / grad_clip: AdamW on the residual only.
        tau / bidirectional: Eq. 1 temperature and direction.
        delta_l2: optional Δa² penalty (0 = the paper's objective).
        latent_dim_check: fail early when components disagree (always on; kept for clarity).
        imagine_steps: flow-matching sampling steps for the imagined rollouts.
        max_chunks: cap on chunks per rollout (default: the imagined length, bounded by the
            suite's step budget).
        workers: simulator worker processes.
        camera: the image the residual's visual encoder reads.
        checkpoint_every: save a resumable checkpoint every this many iterations.
        seed: RNG seed (residual init, sampling, choice of initial states per round).
    """

    policy: str = ""
    wm: str = ""
    align: str = ""
    benchmark: str = "libero_object"
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["0"])
    init_states_per_task: int = 8
    num_envs: int = 4
    iterations: int = 20
    epochs_per_rollout: int = 1
    lr: float = 3e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    tau: float = 0.07
    bidirectional: bool = True
    delta_l2: float = 0.0
    imagine_steps: int = 10
    max_chunks: int = 0
    workers: int = 2
    camera: str = "agentview"
    checkpoint_every: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        if self.num_envs < 2:
            raise World2ActError(f"post-train: num_envs must be ≥ 2 (InfoNCE needs negatives), got {self.num_envs}")
        if self.init_states_per_task < self.num_envs:
            raise World2ActError(f"post-train: init_states_per_task ({self.init_states_per_task}) must be ≥ num_envs ({self.num_envs})")
        for name in ("iterations", "epochs_per_rollout", "imagine_steps", "workers", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise World2ActError(f"post-train: {name} must be positive, got {getattr(self, name)}")
        if not (self.tau > 0 and self.lr > 0):
            raise World2ActError("post-train: tau and lr must be positive")

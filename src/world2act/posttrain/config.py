"""Configuration of Stage 2 latent action post-training (paper Sec. 4.2)."""
from __future__ import annotations

import dataclasses

from world2act import World2ActError
from world2act.utils.config import opt

#: default LoRA targets (``adapter=lora``): the base flow policy's action head; the same as
#: :data:`world2act.policies.lora_policy.DEFAULT_TARGETS` (kept here so the config loads without torch)
#: how the world model is prompted for imagined targets: one prompt per skill (Skill-WM, the
#: paper) or the global instruction for the whole task (Base-WM, the paper's Table 4 ablation)
WM_PROMPTS = ("skills", "instruction")
LORA_TARGETS = ("decoder.layers.*.linear1", "decoder.layers.*.linear2", "act_in", "act_out")


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
        epochs_per_rollout: passes over the update's batches per round (the last ``replay``
            rounds, the current one included); 1 with ``replay`` ≤ 1 is strictly on-policy.
        updates_per_round: optimizer steps per round, each on one stored round drawn at random
            from the replay buffer (0 = ``epochs_per_rollout`` passes, the old schedule). The
            residual needs hundreds of steps to learn state-specific corrections: measured in
            docs/results.md ("a budget the residual can learn from").
        replay: rounds of rollouts trained on in each update, the current one included (0 and
            1 = only the current round; 2 = the current and the previous one). Older rounds'
            Δa is recomputed with the current residual; their base chunks, observations and
            targets are stored.
        targets: ``imagined`` (the paper: the world model's skill-compositional imagination
            from the init state's first frame) or ``demo`` (an oracle: the scripted expert is
            run from the same post-training init state and its own video's latents, the
            denoiser's x0 at σ = ``demo_sigma``, are the targets). ``demo`` separates "the
            world model imagines the wrong thing" from "Stage 2 cannot use a right target".
        demo_sigma: noise level of the x0 prediction for ``targets=demo`` (Stage 1's default).
        wm_prompts: how the world model is prompted for ``targets=imagined``: ``skills`` (the
            paper's Skill-WM: one clip chain per schema skill) or ``instruction`` (a Base-WM,
            Table 4: the global instruction for every clip; train it with ``train-wm --dataset
            DEMOS --clips skills`` so that it learns whole episodes at the same time scale).
        task_mixing: ``single`` (the paper: the N rollouts of an update share one task, so
            the negatives are other init states of that task) or ``mixed`` (the N rollouts are
            spread over the run's tasks round-robin: same-task hard negatives beside other-task
            easy ones).
        contrast: ``sequence`` (Eq. 1 over chunk-averaged similarities: one InfoNCE term per
            rollout) or ``chunk`` (one InfoNCE term per rollout chunk: the positive is the
            same rollout's aligned target chunk, the negatives the other rollouts' targets at
            that chunk plus, with ``temporal_negatives``, the same rollout's targets at chunks
            at least 2 away), or ``cosine`` (positives only, 1 − cos per chunk: an ablation
            that asks whether the negatives help or only add noise), or ``decoded`` (the
            target decoded to an action chunk by Stage 1's frozen g_a and matched in action
            space: ours, measured in docs/results.md), or ``expert`` (the action-level oracle:
            the expert's aligned chunk itself is the goal; ``targets=demo`` only; an upper bound
            on what the machinery can do with a perfect target).
        temporal_negatives: with ``contrast=chunk``, also contrast against the same rollout's
            other-time targets (teaches pace, not only identity).
        time_alignment: ``index`` (rollout chunk t ↔ target chunk t) or ``events`` (piecewise
            linear in time between anchors: the rollout's first gripper closure ↔ the target's
            grasp — the expert's first closure for ``demo`` targets, the end of the first
            skill's clips for ``imagined`` ones; after the anchor chunk offsets follow).
        fa_input: ``executed`` (f_a sees exactly the action the simulator runs: base + Δa
            un-normalised, clipped to the action box, normalised again) or ``clamped`` (the old
            behaviour: base + Δa clamped to ±3 normalised units).
        max_delta: trust region on the residual, normalised action units: Δa = m·tanh(Δa/m)
            (0 = unbounded). Stored in the policy so evaluation applies the same bound.
        gate_init: initial value of the residual's output gate (0 = start at the base exactly;
            ``head=decoder`` only).
        head: the residual's output head (:class:`world2act.policies.residual_net.ResidualNetConfig`):
            ``decoder`` (the paper, gated g_a), ``latent`` (g_a(z + δz) − g_a(z)) or ``linear``.
        expert_relabel: query the scripted expert's chunk from each rollout chunk's own start
            state (DAgger-style, :meth:`ManipulationEnv.expert_chunk`) instead of taking the
            same-init-state expert trajectory's chunk at the aligned time; with
            ``contrast=expert`` this is a state-conditioned action oracle. Needs an expert.
        lr / weight_decay / grad_clip: AdamW on the residual only.
        tau / bidirectional: Eq. 1 temperature and direction.
        delta_l2: optional Δa² penalty (0 = the paper's objective).
        latent_dim_check: fail early when components disagree (always on; kept for clarity).
        imagine_steps: flow-matching sampling steps for the imagined rollouts.
        max_chunks: cap on chunks per rollout (default: the imagined length, bounded by the
            suite's step budget).
        workers: simulator worker processes (0 = the simulators run in this process).
        camera: the image the residual's visual encoder reads ("" = the base policy's first
            camera: agentview on LIBERO, corner2 on Meta-World).
        checkpoint_every: save a resumable checkpoint every this many iterations.
        seed: RNG seed (residual init, sampling, choice of initial states per round).
        adapter: what Stage 2 trains: ``residual`` (the paper: a residual network on top of the
            frozen base, Sec. 4.2) or ``lora`` (Table S2: low-rank adapters inside the frozen
            base flow policy, the gradient flowing through its flow-matching sampling from the
            rollout's own noise; :mod:`world2act.policies.lora_policy`). With ``lora`` the
            residual's keys (``head``, ``gate_init``, ``max_delta``, ``camera``) do not act;
            ``delta_l2`` penalises the adapted chunk's distance to the base chunk. Needs a local
            ``flow`` base policy.
        lora_rank: LoRA rank r (α = r, so the update is not rescaled).
        lora_targets: glob patterns over the base network's module names that get adapters
            (each must match an ``nn.Linear``; attention ``out_proj`` is refused). Default: the
            flow-matching action head — the decoder's feed-forward layers and the action
            input/output projections.
        lora_sample_steps: Euler steps of the base's flow sampling with gradient, used at
            rollout and update time alike (0 = the base policy's own ``flow_steps``).
    """

    policy: str = opt("", "frozen base policy folder, or remote://HOST:PORT (a policy served by world2act serve)",
                      required=True)
    wm: str = opt("", "world-model folder (Skill-WM)", required=True)
    align: str = opt("", "Stage-1 folder", required=True)
    benchmark: str = opt("libero_object", "benchmark for the on-policy rollouts (default libero_object)")
    tasks: list[str] = opt(help="task ids / names, comma-separated", factory=lambda: ["0"])
    init_states_per_task: int = opt(8, "imagined trajectories per task", flag="--init-states")
    num_envs: int = opt(4, "parallel rollouts per update (N ≥ 2)")
    iterations: int = opt(20, "rollout + update rounds")
    epochs_per_rollout: int = 1
    updates_per_round: int = 0
    replay: int = 0
    targets: str = opt("imagined", "Stage-2 targets: the world model's imagination (default, the paper) or the "
                       "scripted expert's own video from the same init state (an oracle)", choices=["imagined", "demo"])
    demo_sigma: float = 0.1
    wm_prompts: str = opt("skills", "world-model prompts: skills (Skill-WM, default) or instruction (Base-WM)",
                          choices=list(WM_PROMPTS))
    task_mixing: str = "single"
    contrast: str = "sequence"
    temporal_negatives: bool = True
    time_alignment: str = "index"
    fa_input: str = "clamped"
    max_delta: float = 0.0
    gate_init: float = 0.0
    head: str = "decoder"
    expert_relabel: bool = False
    lr: float = 3e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    tau: float = 0.07
    bidirectional: bool = True
    delta_l2: float = 0.0
    imagine_steps: int = 10
    max_chunks: int = 0
    workers: int = opt(2, "simulator worker processes")
    camera: str = ""
    checkpoint_every: int = 5
    seed: int = 0
    adapter: str = "residual"
    lora_rank: int = 8
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: list(LORA_TARGETS))
    lora_sample_steps: int = 0

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        self.lora_targets = [str(t) for t in self.lora_targets]
        if self.num_envs < 2:
            raise World2ActError(f"post-train: num_envs must be ≥ 2 (InfoNCE needs negatives), got {self.num_envs}")
        if self.init_states_per_task < self.num_envs:
            raise World2ActError(f"post-train: init_states_per_task ({self.init_states_per_task}) must be ≥ num_envs ({self.num_envs})")
        for name in ("iterations", "epochs_per_rollout", "imagine_steps", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise World2ActError(f"post-train: {name} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise World2ActError(f"post-train: workers must be ≥ 0 (0 = simulators in this process), got {self.workers}")
        choices = {"targets": ("imagined", "demo"), "wm_prompts": WM_PROMPTS, "task_mixing": ("single", "mixed"),
                   "contrast": ("sequence", "chunk", "cosine", "decoded", "expert"), "time_alignment": ("index", "events"),
                   "fa_input": ("executed", "clamped"), "head": ("decoder", "latent", "linear"),
                   "adapter": ("residual", "lora")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise World2ActError(f"post-train: {name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.contrast == "expert" and self.targets != "demo" and not self.expert_relabel:
            raise World2ActError("post-train: contrast=expert needs the expert's chunks (targets=demo or expert_relabel=true)")
        if self.updates_per_round < 0:
            raise World2ActError(f"post-train: updates_per_round must be ≥ 0, got {self.updates_per_round}")
        if self.replay < 0 or self.max_delta < 0 or self.demo_sigma <= 0:
            raise World2ActError("post-train: replay and max_delta must be ≥ 0 and demo_sigma > 0")
        if not (self.tau > 0 and self.lr > 0):
            raise World2ActError("post-train: tau and lr must be positive")
        if self.lora_rank < 1 or self.lora_sample_steps < 0:
            raise World2ActError(f"post-train: lora_rank must be ≥ 1 and lora_sample_steps ≥ 0, got "
                                 f"{self.lora_rank} and {self.lora_sample_steps}")
        if not self.lora_targets:
            raise World2ActError("post-train: lora_targets needs at least one module pattern")

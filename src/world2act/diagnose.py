"""``world2act diagnose``: the offline Stage-2 signal table (does the aligned space carry a signal?).

Stage 2 (paper Sec. 4.2) pulls the policy's action embeddings ``f_a(a)`` towards the world
model's imagined video embeddings ``f_v(z)``, same rollout = positive, other init states of the
same task = negatives. This command measures, on the demonstrations that the world model and
Stage 1 never trained on, how much of that signal exists before any simulator runs:

for every held-out demonstration ``d`` (of task ``τ(d)``), chunk index ``t`` on the *episode
grid* (the demo cut into consecutive K-step chunks from its first step, K = Stage 1's chunk
size: exactly how Stage 2 pairs rollout chunks with imagined latent frames),

    positive_d = mean_t cos(f_v(z_d,t), f_a(a_d,t))
    negative_d = mean over e ≠ d with τ(e) = τ(d) of mean_t cos(f_v(z_d,t), f_a(a_e,t))
    gap_d      = positive_d − negative_d

where ``t`` runs over the chunks both sequences have (index pairing, no padding). Rows differ
in where ``z`` comes from: (a) the denoiser's x0 prediction at σ = 0.1 given the demo's own
video (what Stage 1 trains on, :func:`world2act.align.wm_cache.window_pair` +
``WorldModel.denoised_latents``); (b) the same with the actions shifted by whole chunks (the
lag test); (c) x0 at larger σ; (d) the world model's skill-compositional imagination from the
demo's first frame (:func:`world2act.posttrain.loop.imagine_targets`, Stage 2's targets).
Further: (e) f_v cosine between imagined and real latents; (f) several imagination samples
per init state (within vs between init states); (g) how far ``f_a`` moves per unit of action
change (finite differences in normalised action units).

The pure functions (:func:`index_paired_gap`, :func:`per_frame_cosine`,
:func:`sample_consistency`, :func:`action_sensitivity`, :func:`select_demos`) hold all the
arithmetic and are unit-tested; :func:`run` only loads, embeds and writes.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from world2act import World2ActError
from world2act.posttrain.config import WM_PROMPTS
from world2act.utils.config import opt

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config
@dataclasses.dataclass
class DiagnoseConfig:
    """Configuration of ``world2act diagnose``.

    Attributes:
        wm: world-model folder (``world2act train-wm``).
        align: Stage-1 folder (``world2act align``: f_v, f_a and the action normaliser).
        dataset: the demonstration dataset (``world2act collect``) the world model's skill
            dataset was segmented from; its held-out demos are the ones the WM (``clips.json``)
            and Stage 1 (``metrics.json`` → ``split``) held out.
        episodes: held-out demos to use (0 = all), picked two per task first so every used
            task has negatives.
        sigma: noise level of the x0 prediction for rows (a), (b), (e) (Stage 1's default 0.1).
        sigmas: further noise levels for row (c).
        shifts: action shifts in chunks for row (b): shift s pairs video chunk t with action
            chunk t + s.
        imagine: compute the imagination rows (d), (e), (f) (the expensive part).
        samples: imagination samples per init state (row (f) needs ≥ 2).
        imagine_steps: flow-matching sampling steps per imagined clip (Stage 2's default 10).
        wm_prompts: ``skills`` (Skill-WM) or ``instruction`` (a Base-WM trained on the
            demonstrations themselves), as ``post-train``'s option of that name.
        epsilons: perturbation norms for row (g), normalised action units, norm over a whole
            K×A chunk.
        eps_draws: random directions per chunk and ε.
        seed: seed of the x0 noise, the imagination and the perturbations.
    """

    wm: str = opt("", "world-model folder (output of `world2act train-wm`)")
    align: str = opt("", "Stage-1 folder (output of `world2act align`)")
    dataset: str = opt("", "demonstration dataset (output of `world2act collect`)")
    episodes: int = opt(8, "held-out demos to use, two per task first (default 8; 0 = all)")
    sigma: float = 0.1
    sigmas: list[float] = opt(help="further x0 noise levels, comma-separated (default 1,4)", factory=lambda: [1.0, 4.0])
    shifts: list[int] = dataclasses.field(default_factory=lambda: [1, -1])
    imagine: bool = opt(True, "skip the imagination rows (real video only)", flag="--no-imagine")
    samples: int = opt(2, "imagination samples per init state (default 2)")
    imagine_steps: int = opt(10, "sampling steps per imagined clip (default 10)")
    wm_prompts: str = opt("skills", "world-model prompts: skills (Skill-WM, default) or instruction (Base-WM)",
                          choices=list(WM_PROMPTS))
    epsilons: list[float] = dataclasses.field(default_factory=lambda: [0.1, 0.3, 1.0])
    eps_draws: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        self.sigmas = [float(s) for s in self.sigmas]
        self.shifts = [int(s) for s in self.shifts]
        self.epsilons = [float(e) for e in self.epsilons]
        if self.episodes < 0 or self.episodes == 1:
            raise World2ActError(f"diagnose: episodes must be 0 (all) or ≥ 2 (negatives need two demos of a task), "
                                 f"got {self.episodes}")
        if self.sigma < 0 or any(s < 0 for s in self.sigmas):
            raise World2ActError(f"diagnose: noise levels must be ≥ 0, got sigma={self.sigma}, sigmas={self.sigmas}")
        if any(s == 0 for s in self.shifts):
            raise World2ActError(f"diagnose: shifts are non-zero chunk offsets, got {self.shifts}")
        if self.wm_prompts not in WM_PROMPTS:
            raise World2ActError(f"diagnose: wm_prompts must be one of {', '.join(WM_PROMPTS)}, got {self.wm_prompts!r}")
        if self.samples < 1 or self.imagine_steps < 1 or self.eps_draws < 1:
            raise World2ActError(f"diagnose: samples, imagine_steps and eps_draws must be ≥ 1 (got {self.samples}, "
                                 f"{self.imagine_steps}, {self.eps_draws})")
        if any(not e > 0 for e in self.epsilons):
            raise World2ActError(f"diagnose: epsilons must be > 0, got {self.epsilons}")


# --------------------------------------------------------------------------- pure math
def _nanmean(xs) -> float:
    xs = [float(x) for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")


def _nanstd(xs) -> float:
    xs = [float(x) for x in xs if x == x]
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else (0.0 if xs else float("nan"))


def shift_pair(video: torch.Tensor, action: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-index two sequences so that ``video[t]`` meets ``action[t + shift]``.

    Args:
        video: ``[T_v, D]``; action: ``[T_a, D]``; shift: chunks (positive: the video meets
            later actions).

    Returns:
        the two sequences trimmed so that index ``t`` of one pairs with index ``t`` of the other
        (either may be empty).
    """
    if shift >= 0:
        return video, action[shift:]
    return video[-shift:], action


def paired_cosine(video: torch.Tensor, action: torch.Tensor, shift: int = 0) -> torch.Tensor:
    """Per-chunk cosine ``cos(video[t], action[t + shift])`` over the chunks both have: ``[T]``."""
    v, a = shift_pair(video, action, shift)
    T = min(v.shape[0], a.shape[0])
    if T == 0:
        return torch.zeros(0)
    return F.cosine_similarity(v[:T].double(), a[:T].double(), dim=-1)


def index_paired_gap(video_emb: list[torch.Tensor], action_emb: list[torch.Tensor], task_of: list[str],
                     shift: int = 0, negatives: str = "same_task") -> dict:
    """Positive vs index-paired negative cosine per demo, and their gap over demos.

    Args:
        video_emb: per demo ``[T_d, D]`` (f_v of its latent frames, one per chunk).
        action_emb: per demo ``[T'_d, D]`` (f_a of its action chunks); lengths may differ: only
            chunk indices present in both sequences of a pair count.
        task_of: per demo its task (instruction).
        shift: pair video chunk t with action chunk t + shift (all pairs alike).
        negatives: ``same_task`` (Stage 2's: other demos of the same task) or ``other_tasks``.

    Returns:
        dict with ``pos``, ``neg``, ``gap`` (means over the demos that have at least one
        negative and one shared chunk, so ``gap = pos − neg``), ``gap_std`` (sample std over
        those demos), ``n_demos``, ``n_gap_pos`` (demos with gap > 0), ``chunks`` (mean chunks
        per positive pair) and ``per_demo`` (``pos``, ``neg``, ``gap``, ``chunks`` per demo; NaN
        where undefined).

    Raises:
        World2ActError: lists of different lengths or an unknown ``negatives``.
    """
    n = len(video_emb)
    if not (len(action_emb) == len(task_of) == n):
        raise World2ActError(f"index_paired_gap: {n} video, {len(action_emb)} action sequences, {len(task_of)} tasks")
    if negatives not in ("same_task", "other_tasks"):
        raise World2ActError(f"index_paired_gap: negatives {negatives!r} is not same_task or other_tasks")
    per = []
    for d in range(n):
        c = paired_cosine(video_emb[d], action_emb[d], shift)
        pos = float(c.mean()) if c.numel() else float("nan")
        negs = []
        for e in range(n):
            if e == d or ((task_of[e] == task_of[d]) != (negatives == "same_task")):
                continue
            ce = paired_cosine(video_emb[d], action_emb[e], shift)
            if ce.numel():
                negs.append(float(ce.mean()))
        neg = float(np.mean(negs)) if negs else float("nan")
        per.append({"pos": pos, "neg": neg, "gap": pos - neg, "chunks": int(c.numel()), "negatives": len(negs)})
    ok = [p for p in per if p["gap"] == p["gap"]]
    gaps = [p["gap"] for p in ok]
    return {
        "pos": _nanmean(p["pos"] for p in ok), "neg": _nanmean(p["neg"] for p in ok), "gap": _nanmean(gaps),
        "gap_std": _nanstd(gaps), "n_demos": len(ok), "n_gap_pos": int(sum(g > 0 for g in gaps)),
        "chunks": _nanmean(p["chunks"] for p in ok), "per_demo": per,
    }


def per_frame_cosine(a_emb: list[torch.Tensor], b_emb: list[torch.Tensor]) -> list[float]:
    """Mean over demos of ``cos(a_d[t], b_d[t])`` for each chunk index t (demos that have t)."""
    T = max((min(a.shape[0], b.shape[0]) for a, b in zip(a_emb, b_emb)), default=0)
    sums, counts = np.zeros(T), np.zeros(T)
    for a, b in zip(a_emb, b_emb):
        c = paired_cosine(a, b).numpy()
        sums[:len(c)] += c
        counts[:len(c)] += 1
    return [float(s / k) if k else float("nan") for s, k in zip(sums, counts)]


def sample_consistency(samples: list[list[torch.Tensor]], task_of: list[str]) -> dict:
    """How alike several imagination samples are within and between init states.

    Args:
        samples: per demo (= init state) a list of ``[T, D]`` f_v sequences, one per sample.
        task_of: per demo its task.

    Returns:
        dict: ``within`` (mean index-paired cosine between two samples of one init state),
        ``between_same_task`` (a sample of one init state vs a sample of another init state of
        the same task: what tells Stage 2's positives from its negatives), ``between_other_tasks``,
        ``within_minus_between`` (= within − between_same_task; near 0: the world model ignores the
        init state) and ``n_demos``. NaN where no pair exists.
    """
    def seq_cos(x, y):
        c = paired_cosine(x, y)
        return float(c.mean()) if c.numel() else float("nan")

    within, same, other = [], [], []
    n = len(samples)
    for d in range(n):
        sd = samples[d]
        within += [seq_cos(sd[i], sd[j]) for i in range(len(sd)) for j in range(len(sd)) if i < j]
        for e in range(n):
            if e == d:
                continue
            vals = [seq_cos(x, y) for x in sd for y in samples[e]]
            (same if task_of[e] == task_of[d] else other).extend(vals)
    w, b = _nanmean(within), _nanmean(same)
    return {"within": w, "between_same_task": b, "between_other_tasks": _nanmean(other),
            "within_minus_between": w - b, "n_demos": n, "samples": max((len(s) for s in samples), default=0)}


@torch.no_grad()
def action_sensitivity(f_a, chunks: torch.Tensor, epsilons: list[float], draws: int = 8,
                       generator: torch.Generator | None = None) -> list[dict]:
    """Finite-difference sensitivity of the action embedding to a change of the action chunk.

    For every chunk ``a`` ``[K, A]`` (normalised units), ``draws`` Gaussian directions scaled to
    Frobenius norm ε are added; the embedding's move is ``1 − cos(f_a(a), f_a(a + δ))``.

    Args:
        f_a: ``[..., K, A] -> [..., D]``.
        chunks: ``[N, K, A]`` normalised action chunks.

    Returns:
        per ε: ``eps``, ``rms_per_element`` (ε / √(K·A), comparable to Stage 2's mean |Δa|),
        ``one_minus_cos`` (mean), ``per_unit`` (mean (1 − cos) / ε), ``n`` (perturbations).
    """
    N, K, A = chunks.shape
    base = f_a(chunks.float())  # [N, D]
    out = []
    for eps in epsilons:
        noise = torch.randn((draws, N, K, A), generator=generator)
        noise = noise / noise.flatten(2).norm(dim=-1).clamp(min=1e-12)[..., None, None] * eps
        moved = f_a(chunks.float()[None] + noise)  # [draws, N, D]
        omc = 1.0 - F.cosine_similarity(moved.double(), base[None].double(), dim=-1)
        out.append({"eps": float(eps), "rms_per_element": float(eps / math.sqrt(K * A)),
                    "one_minus_cos": float(omc.mean()), "per_unit": float(omc.mean() / eps), "n": int(omc.numel())})
    return out


@torch.no_grad()
def between_demo_action_distance(f_a, chunks: list[torch.Tensor], task_of: list[str]) -> dict:
    """Scale reference for :func:`action_sensitivity`: index-paired chunks of two demos of one task.

    Returns:
        ``chunk_norm`` (mean Frobenius norm of ``a_d,t − a_e,t``, normalised units),
        ``one_minus_cos`` (mean ``1 − cos(f_a(a_d,t), f_a(a_e,t))``), ``pairs``.
    """
    dists, omc = [], []
    for d in range(len(chunks)):
        for e in range(d + 1, len(chunks)):
            if task_of[d] != task_of[e]:
                continue
            T = min(chunks[d].shape[0], chunks[e].shape[0])
            if T == 0:
                continue
            x, y = chunks[d][:T].float(), chunks[e][:T].float()
            dists += (x - y).flatten(1).norm(dim=-1).tolist()
            omc += (1.0 - F.cosine_similarity(f_a(x).double(), f_a(y).double(), dim=-1)).tolist()
    return {"chunk_norm": _nanmean(dists), "one_minus_cos": _nanmean(omc), "pairs": len(dists)}


def select_demos(ids: list[int], task_of: dict[int, str], n: int) -> list[int]:
    """Pick up to ``n`` held-out demos (0 = all): two per task first (so each has a negative),
    then one more per task in turn; tasks with a single held-out demo are left out.

    Raises:
        World2ActError: no task has two held-out demos.
    """
    groups: dict[str, list[int]] = {}
    for i in sorted(ids):
        groups.setdefault(task_of[i], []).append(i)
    groups = {t: g for t, g in groups.items() if len(g) >= 2}
    if not groups:
        raise World2ActError(f"held-out demos {sorted(ids)}: no task has two of them, so there are no negatives "
                             "(Stage 2's negatives are other demos of the same task)")
    budget = n or sum(len(g) for g in groups.values())
    chosen: list[int] = []
    for g in groups.values():
        if budget >= 2:
            chosen += g[:2]
            budget -= 2
    r = 2
    while budget > 0 and any(len(g) > r for g in groups.values()):
        for g in groups.values():
            if budget > 0 and len(g) > r and g[0] in chosen:
                chosen.append(g[r])
                budget -= 1
        r += 1
    return sorted(chosen)


# --------------------------------------------------------------------------- inputs
def check_components(wc, ac, ds, cfg: DiagnoseConfig) -> None:
    """Raise :class:`World2ActError` naming both sides of the first mismatch between the world
    model config ``wc``, the Stage-1 config ``ac`` and the dataset ``ds``."""
    from world2act.worldmodel.alignment import actions_per_latent_frame

    wk = actions_per_latent_frame(wc.frame_stride)
    pairs = [
        (f"world model {cfg.wm} latent_channels", wc.latent_channels, f"align {cfg.align} latent_channels", ac.latent_channels),
        (f"world model {cfg.wm} chunk size (4 × frame_stride {wc.frame_stride})", wk, f"align {cfg.align} chunk_size", ac.chunk_size),
        (f"world model {cfg.wm} latent_size", list(wc.latent_size), f"align {cfg.align} latent_size", list(ac.latent_size)),
        (f"world model {cfg.wm} cameras", list(wc.cameras), f"align {cfg.align} cameras", list(ac.cameras)),
        (f"dataset {cfg.dataset} action_dim", ds.spec.action_dim, f"align {cfg.align} action_dim", ac.action_dim),
    ]
    if ac.layout:
        pairs.append((f"world model {cfg.wm} layout", wc.layout, f"align {cfg.align} layout", ac.layout))
    for left, lv, right, rv in pairs:
        if lv != rv:
            raise World2ActError(f"mismatched components: {left} = {lv} but {right} = {rv}")
    missing = [c for c in wc.cameras if c not in ds.cameras]
    if missing:
        raise World2ActError(f"mismatched components: dataset {cfg.dataset} lacks cameras {missing} that world model "
                             f"{cfg.wm} needs (dataset has {list(ds.cameras)})")


def heldout_demos(wm_dir: Path, align_dir: Path, ds, dataset: str) -> tuple[list[int], str]:
    """The demos that the world model and Stage 1 held out, as episode indices of ``ds``.

    The world model's rule (``world2act.worldmodel.data.split_by_source``) is recorded in
    ``WM/clips.json`` → ``held_out_source_episodes`` (source = demo-dataset episode index);
    Stage 1 records its held-out demos in ``ALIGN/metrics.json`` → ``split.heldout_demo_ids``
    (the WM's own by default). Both present: their intersection (unseen by either).

    Returns:
        (sorted episode indices, a description of where they come from).

    Raises:
        World2ActError: neither lists any held-out demo, the lists share none, an index lies
            outside the dataset, or a held-out demo's instruction differs from what the world
            model recorded for it (not the dataset the world model came from).
    """
    from world2act.utils.io import read_json

    wm_ids = al_ids = None
    records: dict[int, str] = {}
    if (wm_dir / "clips.json").is_file():
        cj = read_json(wm_dir / "clips.json")
        wm_ids = {int(x) for x in cj.get("held_out_source_episodes", [])}
        for c in cj.get("clips", []):
            if "source_episode" in c and c.get("instruction"):
                records[int(c["source_episode"])] = str(c["instruction"]).strip()
    if (align_dir / "metrics.json").is_file():
        split = read_json(align_dir / "metrics.json").get("split") or {}
        if "heldout_demo_ids" in split:
            al_ids = {int(x) for x in split["heldout_demo_ids"]}
    if wm_ids is None and al_ids is None:
        raise World2ActError(f"--dataset {dataset}: no held-out episodes known: neither {wm_dir}/clips.json "
                             f"(held_out_source_episodes) nor {align_dir}/metrics.json (split.heldout_demo_ids) exists")
    if wm_ids is not None and al_ids is not None:
        ids, source = wm_ids & al_ids, "world model ∩ align"
        if not ids:
            raise World2ActError(f"--dataset {dataset}: no held-out episodes: the world model holds out {sorted(wm_ids)} "
                                 f"and align holds out {sorted(al_ids)}, no demo is held out by both")
    else:
        ids, source = (wm_ids, "world model") if wm_ids is not None else (al_ids, "align")
        if not ids:
            where = f"{wm_dir}/clips.json" if wm_ids is not None else f"{align_dir}/metrics.json"
            raise World2ActError(f"--dataset {dataset}: no held-out episodes ({where} lists none)")
    outside = sorted(i for i in ids if not 0 <= i < ds.num_episodes)
    if outside:
        raise World2ActError(f"--dataset {dataset}: has {ds.num_episodes} episodes but held-out demos {outside} lie "
                             "outside it; pass the demo dataset the world model's skills were segmented from")
    for i in sorted(ids):
        task = str(ds.episode_meta(i)["task"]).strip()
        if i in records and records[i] != task:
            raise World2ActError(f"--dataset {dataset}: episode {i} is {task!r} but the world model's held-out demo {i} "
                                 f"was {records[i]!r}; pass the demo dataset the world model came from")
    return sorted(ids), source


@dataclasses.dataclass
class Demo:
    """One held-out demonstration cut on the episode grid."""

    episode: int
    task: str
    prompts: list[str]        # one per world-model clip (Stage 2's imagination prompts)
    first_frame: np.ndarray   # stitched uint8 [H, W, 3] in the WM's layout
    videos: np.ndarray        # [n_windows, num_frames, H, W, 3] uint8
    valid: list[int]          # valid latent frames per window
    chunks: np.ndarray        # [T, K, A] raw actions, T = sum(valid)


def load_demo(ds, episode: int, wc, prompts: list[str]) -> Demo:
    """Cut a demo into world-model windows from step 0 (:func:`world2act.align.wm_cache.clip_windows`,
    :func:`~world2act.align.wm_cache.window_pair`): latent frame j ≥ 1 of window w meets the
    actions of steps ``w + [K(j−1), Kj)``, so the valid latent frames of consecutive windows are
    the consecutive K-step chunks of the episode."""
    from world2act.align.wm_cache import _resize, _stitch, clip_windows, window_pair

    ep = ds.load_episode(episode, cameras=list(wc.cameras))
    views = {c: _resize(ep.images[c], tuple(wc.image_size)) for c in wc.cameras}
    frames = _stitch(views, list(wc.cameras), wc.layout)
    acts = ep.actions.astype(np.float32)
    videos, valid, chunks = [], [], []
    for start, _nv in clip_windows(len(acts), wc.num_frames, wc.frame_stride):
        v, c, m = window_pair(acts, frames, start, wc.num_frames, wc.frame_stride)
        nv = int(m.sum())
        videos.append(v)
        valid.append(nv)
        chunks.append(c[:nv])
    K, A = 4 * wc.frame_stride, acts.shape[1]
    return Demo(episode, ep.task, prompts, frames[0],
                np.stack(videos) if videos else np.zeros((0, wc.num_frames, *frames.shape[1:]), np.uint8), valid,
                np.concatenate(chunks) if chunks else np.zeros((0, K, A), np.float32))


@torch.no_grad()
def real_video_embeddings(wm, bundle, demo: Demo, sigma: float, seed: int) -> torch.Tensor:
    """f_v of the x0 prediction at ``sigma`` for the demo's own video, one per chunk: ``[T, D]``.

    Window w is denoised with the prompt of the w-th imagined clip (Stage 2's prompt for those
    steps; the last prompt for windows past the imagination)."""
    if not demo.valid:
        return torch.zeros(0, bundle.config.latent_dim)
    prompts = [demo.prompts[min(w, len(demo.prompts) - 1)] for w in range(len(demo.valid))]
    z = wm.denoised_latents(demo.videos, prompts, sigma, seed=seed).float().cpu()  # [W, T', C, h, w]
    lat = torch.cat([z[w, 1:1 + nv] for w, nv in enumerate(demo.valid)])
    return bundle.f_v(lat[None])[0]


# --------------------------------------------------------------------------- stage entry
def run(cfg: DiagnoseConfig, out: str | Path, *, device: str = "cpu", overwrite: bool = False,
        progress: bool = True) -> dict:
    """Compute the Stage-2 signal table and write ``diagnose.json``, ``diagnose.md`` and
    ``manifest.json`` under ``out``.

    Returns:
        the dict written to ``diagnose.json``.

    Raises:
        World2ActError: a missing input, components that disagree (action dim, chunk size,
            latent channels/size, cameras) or a dataset without held-out episodes; all checked
            before the world model's weights are loaded or ``out`` is touched.
    """
    from world2act.utils.io import prepare_out_dir
    from world2act.utils.seeding import seed_everything
    from world2act.worldmodel import WorldModel

    started = time.time()
    bundle, ds, wm_dir, wc, wm, held, held_source, task_of_ep, used, skills = _check_inputs(cfg, device)
    out = prepare_out_dir(out, overwrite=overwrite)
    seed_everything(cfg.seed)

    # ---- heavy part
    if wm is None:
        wm = WorldModel.load(wm_dir, device=device)
    wm.eval()
    timings: dict[str, float] = {}
    t0 = time.time()
    demos = [load_demo(ds, i, wc, wm.clip_prompts(skills[task_of_ep[i]])) for i in used]
    demos = [d for d in demos if d.chunks.shape[0] > 0]
    if sum(1 for d in demos for e in demos if d is not e and d.task == e.task) == 0:
        raise World2ActError(f"--dataset {cfg.dataset}: the held-out demos {used} are too short for one chunk "
                             f"({4 * wc.frame_stride} steps) or leave no task with two of them")
    tasks = [d.task for d in demos]
    timings["load"] = time.time() - t0
    log.info("diagnose: %d held-out demos (%s), using %s", len(held), held_source, [d.episode for d in demos])

    act_emb, real, rows = _real_rows(cfg, wm, bundle, demos, tasks, timings, progress)
    result: dict = {}
    if cfg.imagine:
        _imagination_rows(cfg, wm, bundle, demos, tasks, act_emb, real, rows, result, timings, progress)
    t0 = time.time()
    g = torch.Generator().manual_seed(cfg.seed)
    norm_chunks = [bundle.normalize_actions(torch.from_numpy(d.chunks)) for d in demos]
    result["action_sensitivity"] = {
        "perturbations": action_sensitivity(bundle.f_a, torch.cat(norm_chunks), cfg.epsilons, cfg.eps_draws, g),
        "between_demos": between_demo_action_distance(bundle.f_a, norm_chunks, tasks),
    }
    timings["action_sensitivity"] = time.time() - t0
    return _write_outputs(cfg, out, bundle, wc, held, held_source, demos, tasks, rows, result, timings, started)


def _check_inputs(cfg: DiagnoseConfig, device: str):
    """The cheap checks, before the world model's weights are loaded (bar a diffusers folder,
    whose config comes with them) or ``out`` is touched: required inputs, configs, dataset
    metadata, the held-out split and its instructions. Returns ``(bundle, ds, wm_dir, wc, wm,
    held, held_source, task_of_ep, used, skills)``, ``wm`` being ``None`` unless loaded here."""
    from world2act.align import AlignmentBundle
    from world2act.data import LeRobotDataset
    from world2act.posttrain.loop import decompose_episodes
    from world2act.worldmodel import WorldModel

    for name in ("wm", "align", "dataset"):
        if not getattr(cfg, name):
            raise World2ActError(f"diagnose: --{name} is required")
    wm_dir, align_dir = Path(cfg.wm), Path(cfg.align)
    if not wm_dir.is_dir():
        raise World2ActError(f"--wm {wm_dir}: world-model folder not found")
    # ---- cheap checks first: configs, dataset metadata, held-out split, instructions
    bundle = AlignmentBundle.load(align_dir).freeze()
    ds = LeRobotDataset(cfg.dataset)
    from world2act.worldmodel.model import read_config

    wc = read_config(wm_dir)
    wm = None
    if wc is None:  # a diffusers folder: its config comes with the weights
        wm = WorldModel.load(wm_dir, device=device)
        wc = wm.config
    check_components(wc, bundle.config, ds, cfg)
    held, held_source = heldout_demos(wm_dir, align_dir, ds, cfg.dataset)
    task_of_ep = {i: str(ds.episode_meta(i)["task"]).strip() for i in held}
    used = select_demos(held, task_of_ep, cfg.episodes)
    skills = decompose_episodes(used, task_of_ep, cfg.dataset)
    return bundle, ds, wm_dir, wc, wm, held, held_source, task_of_ep, used, skills


def _real_rows(cfg: DiagnoseConfig, wm, bundle, demos: list, tasks: list, timings: dict, progress: bool):
    """The real-video rows: f_a of every demo's chunks, f_v of its x0 predictions at each sigma,
    and the index-paired gaps (episode grid, other-task negatives, shifted actions, each sigma).
    Returns ``(act_emb, real, rows)``."""
    from world2act.utils.progress import progress_bar

    t0 = time.time()
    act_emb = [bundle.f_a(bundle.normalize_actions(torch.from_numpy(d.chunks))[None])[0] for d in demos]
    real: dict[float, list[torch.Tensor]] = {}
    for s in dict.fromkeys([cfg.sigma, *cfg.sigmas]):
        real[s] = [real_video_embeddings(wm, bundle, d, s, seed=cfg.seed * 100_003 + d.episode)
                   for d in progress_bar(demos, desc=f"x0 at sigma {s:g}", disable=not progress, leave=False)]
    timings["real_latents"] = time.time() - t0

    rows = [{"key": f"real_sigma{cfg.sigma:g}", "label": f"real video, x0 at σ = {cfg.sigma:g}, episode grid",
             **index_paired_gap(real[cfg.sigma], act_emb, tasks)},
            {"key": f"real_sigma{cfg.sigma:g}_other_tasks",
             "label": f"real video, x0 at σ = {cfg.sigma:g}, negatives from other tasks (easy)",
             **index_paired_gap(real[cfg.sigma], act_emb, tasks, negatives="other_tasks")}]
    K = bundle.config.chunk_size
    for sh in cfg.shifts:
        rows.append({"key": f"real_sigma{cfg.sigma:g}_shift{sh:+d}",
                     "label": f"real video, actions shifted by {sh:+d} chunk{'s' if abs(sh) > 1 else ''} ({sh * K:+d} steps)",
                     **index_paired_gap(real[cfg.sigma], act_emb, tasks, shift=sh)})
    for s in cfg.sigmas:
        rows.append({"key": f"real_sigma{s:g}", "label": f"real video, x0 at σ = {s:g}",
                     **index_paired_gap(real[s], act_emb, tasks)})
    return act_emb, real, rows


def _imagination_rows(cfg: DiagnoseConfig, wm, bundle, demos: list, tasks: list, act_emb, real: dict, rows: list,
                      result: dict, timings: dict, progress: bool) -> None:
    """``--imagine``: imagine ``cfg.samples`` rollouts per demo; add the imagined row to ``rows``
    and ``imagined_vs_real`` / ``samples`` to ``result``."""
    from world2act.posttrain.loop import imagine_targets
    from world2act.utils.progress import progress_bar

    t0 = time.time()
    imag: list[list[torch.Tensor]] = []
    for d in progress_bar(demos, desc="imagination", disable=not progress, leave=False):
        imag.append([imagine_targets(wm, bundle, d.first_frame, d.task, steps=cfg.imagine_steps, prompts=cfg.wm_prompts,
                                     seed=cfg.seed * 100_003 + 1000 * d.episode + 100 * k)["targets"].float()
                     for k in range(cfg.samples)])
    timings["imagination"] = time.time() - t0
    first = [s[0] for s in imag]
    kind = "skill-compositional" if cfg.wm_prompts == "skills" else "whole-task (Base-WM, instruction-prompted)"
    rows.append({"key": "imagined", "label": f"the world model's {kind} imagination, index-paired",
                 **index_paired_gap(first, act_emb, tasks)})
    ivr = index_paired_gap(first, real[cfg.sigma], tasks)
    rvr = index_paired_gap(real[cfg.sigma], real[cfg.sigma], tasks)
    result["imagined_vs_real"] = {
        "own": ivr["pos"], "other_demos": ivr["neg"], "own_minus_other": ivr["gap"], "n_demos": ivr["n_demos"],
        "real_vs_other_real": rvr["neg"], "per_frame_own": per_frame_cosine(first, real[cfg.sigma]),
        "imagined_chunks": _nanmean(x.shape[0] for x in first), "real_chunks": _nanmean(x.shape[0] for x in act_emb),
    }
    result["samples"] = sample_consistency(imag, tasks)


def _write_outputs(cfg: DiagnoseConfig, out: Path, bundle, wc, held, held_source, demos: list, tasks: list,
                   rows: list, result: dict, timings: dict, started: float) -> dict:
    """Write ``diagnose.json``, ``diagnose.md`` and ``manifest.json``; returns the report."""
    from world2act.utils.io import atomic_write, write_json
    from world2act.utils.manifest import write_manifest

    c = bundle.config
    report = {
        "inputs": {"wm": str(cfg.wm), "align": str(cfg.align), "dataset": str(cfg.dataset)},
        "dims": {"action_dim": c.action_dim, "chunk_size": c.chunk_size, "latent_dim": c.latent_dim,
                 "latent_channels": c.latent_channels, "latent_size": list(c.latent_size),
                 "cameras": list(wc.cameras), "align_latent_source": c.latent_source, "align_sigma": c.sigma},
        "heldout": {"source": held_source, "demo_ids": held, "used": [d.episode for d in demos],
                    "tasks": {t: [d.episode for d in demos if d.task == t] for t in dict.fromkeys(tasks)}},
        "rows": rows, **result,
        "timings_s": {k: round(v, 2) for k, v in timings.items()}, "seconds": round(time.time() - started, 2),
    }
    write_json(out / "diagnose.json", report)
    atomic_write(out / "diagnose.md", render_markdown(report))
    summary = {r["key"]: {"gap": r["gap"], "pos": r["pos"], "neg": r["neg"]} for r in rows}
    write_manifest(out, stage="diagnose", config=cfg, inputs=report["inputs"], metrics=summary, started=started)
    return report


# --------------------------------------------------------------------------- report
def _f(x, nd: int = 3) -> str:
    return "—" if x is None or x != x else f"{x:.{nd}f}"


def render_markdown(r: dict) -> str:
    """The ``diagnose.md`` tables from the ``diagnose.json`` dict."""
    h = r["heldout"]
    L = ["# Stage-2 signal, offline (`world2act diagnose`)", "",
         f"World model `{r['inputs']['wm']}`, Stage 1 `{r['inputs']['align']}`, demos `{r['inputs']['dataset']}`.",
         f"{len(h['used'])} held-out demos ({h['source']}): "
         + "; ".join(f"{t!r}: {ids}" for t, ids in h["tasks"].items()) + ".", "",
         "Positive = f_v of demo d's latent frame t vs f_a of d's action chunk t (episode grid, K = "
         f"{r['dims']['chunk_size']} steps per chunk); negative = the same f_v vs f_a of other demos of the same task "
         "at the same chunk index (only chunks both have). Gap = positive − negative, mean ± std over demos.", "",
         "| f_v input vs the demo's own action chunks (f_a) | positive | negative | gap | demos with gap > 0 | chunks / demo |",
         "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        L.append(f"| {row['label']} | {_f(row['pos'])} | {_f(row['neg'])} | **{_f(row['gap'])} ± {_f(row['gap_std'])}** | "
                 f"{row['n_gap_pos']}/{row['n_demos']} | {_f(row['chunks'], 1)} |")
    iv = r.get("imagined_vs_real")
    if iv:
        L += ["", "## Imagined vs real video in f_v space", "",
              "| f_v cosine (index-paired, mean over demos) | value |", "|---|---|",
              f"| imagined vs the same demo's real video (x0) | {_f(iv['own'])} |",
              f"| imagined vs other demos' real video, same task | {_f(iv['other_demos'])} |",
              f"| real vs other demos' real video, same task (reference) | {_f(iv['real_vs_other_real'])} |",
              f"| chunks per demo: imagined / real | {_f(iv['imagined_chunks'], 1)} / {_f(iv['real_chunks'], 1)} |", "",
              "Per latent frame (imagined vs own real): " + ", ".join(_f(x) for x in iv["per_frame_own"]) + "."]
    s = r.get("samples")
    if s:
        L += ["", f"## Imagination samples per init state ({s['samples']} each)", "",
              "| f_v cosine between imagined trajectories | value |", "|---|---|",
              f"| two samples of the same init state | {_f(s['within'])} |",
              f"| samples of different init states, same task (Stage 2's negatives) | {_f(s['between_same_task'])} |",
              f"| samples of different tasks | {_f(s['between_other_tasks'])} |",
              f"| within − between (same task) | **{_f(s['within_minus_between'])}** |"]
    a = r["action_sensitivity"]
    L += ["", "## Action-embedding sensitivity (f_a)", "",
          "Gaussian perturbation of norm ε added to each normalised K×A chunk.", "",
          "| ε (chunk norm) | per-element RMS | mean 1 − cos | (1 − cos) / ε |", "|---|---|---|---|"]
    for p in a["perturbations"]:
        L.append(f"| {p['eps']:g} | {_f(p['rms_per_element'])} | {_f(p['one_minus_cos'], 4)} | {_f(p['per_unit'], 4)} |")
    b = a["between_demos"]
    L += ["", f"Reference: two demos of the same task at the same chunk differ by norm {_f(b['chunk_norm'])} and "
          f"1 − cos {_f(b['one_minus_cos'], 4)} ({b['pairs']} chunk pairs).", "",
          f"Wall time {r['seconds']:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in r['timings_s'].items())}).", ""]
    return "\n".join(L)


# --------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = DiagnoseConfig, ("overwrite",)


def main(cfg: DiagnoseConfig, args) -> int:
    from world2act.utils.seeding import resolve_device, set_torch_threads

    set_torch_threads()
    r = run(cfg, args.out, device=resolve_device(args.device), overwrite=args.overwrite)
    for row in r["rows"]:
        print(f"{row['label']}: pos {_f(row['pos'])} neg {_f(row['neg'])} gap {_f(row['gap'])} ± {_f(row['gap_std'])} "
              f"({row['n_gap_pos']}/{row['n_demos']} demos > 0)")
    print(f"wrote {Path(args.out) / 'diagnose.md'}")
    return 0

"""``world2act align``: Stage 1 training (paper Sec. 4.1, Eq. 1, Tables S3/S6).

Pipeline: (1) the frozen world model turns every skill clip into latents (cached once, see
:mod:`world2act.align.wm_cache`), paired with the clip's actions by the documented latent/action
mapping; (2) split train / held-out by demonstration; (3) fit the action normaliser and train
f_v, f_a, g_a with L = L_rec + λ·L_NCE (AdamW, the authors' defaults); (4) measure held-out
retrieval / cosine gap / reconstruction, plot curves, save the bundle + manifest; optionally
(5) train the three Table S3 ablation variants on the same data and compare them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from world2act import World2ActError
from world2act.align.bundle import AdapterConfig, AlignmentBundle
from world2act.align.data import AlignData, split_by_demo
from world2act.align.losses import LOSS_VARIANTS, reconstruction_loss, stage1_loss
from world2act.align.metrics import evaluate_bundle, heldout_summary
from world2act.align.negatives import NegativeSampler
from world2act.utils.config import opt
from world2act.utils.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

CURVES = "curves.jsonl"
CHECKPOINT = "checkpoint"


@dataclasses.dataclass
class AlignConfig:
    """Configuration of a Stage-1 run (``world2act align``).

    Loss (paper Sec. 4.1): ``variant`` one of bi_infonce (paper) | single_infonce | marginal |
    global (Table S3); ``lam`` λ (authors' code 0.1); ``tau`` τ (0.07); ``margin`` for the hinge
    variant; ``hard_ratio`` fraction of hard negatives (paper 0.25, authors' code 0.75);
    ``num_negatives`` negatives per anchor. ``video_rec`` (ours, 0 = the paper): weight of a
    cross-modal reconstruction term MSE(g_a(f_v(z)), a), so that the video embedding itself
    decodes to the chunk's actions (Stage 2 moves actions toward what f_v(target) means in
    action space; docs/results.md "Stage 2 machinery" measures why). ``negatives``: ``in_batch`` (default; the paper's
    "negatives (in-batch)": ``batch_size`` items, each an anchor whose negatives are drawn from
    the same batch, which is composed of skill groups so hard negatives exist) or ``explicit``
    (``anchors_per_batch`` anchors, each with its own freshly drawn negatives; exact ratio but
    ~``1+num_negatives`` times the compute).

    Optimisation (authors' defaults): AdamW ``lr`` 1e-4, ``weight_decay`` 1e-2, ``betas``
    (0.9, 0.95), ``grad_clip`` 1.0; ``steps`` updates.

    Data: ``latent_source`` ``denoised`` (the WM's x0 prediction at noise ``sigma`` given the
    ground-truth clip, as the authors do) or ``generated`` (latents of a clip the WM generates
    from the clip's first frame and prompt); ``heldout`` ``wm`` (default: hold out the world
    model's own held-out demonstrations, read from ``WM/clips.json``, when it has any) or
    ``random`` (``val_fraction`` of each instruction's demonstrations);
    ``max_clips`` caps the clips used (0 = all); ``wm_batch`` clips per WM call.
    """

    skills: str = opt("", "skill dataset folder (output of `world2act segment`)", required=True)
    wm: str = opt("", "world-model folder (output of `world2act train-wm`)", required=True)
    latent_dim: int = 32
    variant: str = opt("bi_infonce", "contrastive loss (default bi_infonce, the paper's)", choices=list(LOSS_VARIANTS))
    lam: float = opt(0.1, "InfoNCE weight λ (default 0.1)")
    video_rec: float = 0.0
    tau: float = 0.07
    margin: float = 0.2
    hard_ratio: float = opt(0.25, "fraction of hard negatives (paper 0.25; authors' code 0.75)")
    num_negatives: int = 15
    batch_size: int = 32
    negatives: str = "in_batch"
    anchors_per_batch: int = 16
    steps: int = opt(2000, "training steps (default 2000)")
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    latent_source: str = opt("denoised", "WM latents: x0 prediction for the ground-truth clip (default) or a generated clip",
                             choices=["denoised", "generated"])
    sigma: float = opt(0.1, "noise level for the x0 prediction (default 0.1)")
    generate_steps: int = 10
    val_fraction: float = 0.2
    heldout: str = "wm"
    max_clips: int = 0
    wm_batch: int = 4
    eval_every: int = 200
    log_every: int = 20
    checkpoint_every: int = 200
    compare: bool = opt(False, "also train the three Table S3 ablation variants and compare")
    seed: int = 0

    def __post_init__(self):
        if self.variant not in LOSS_VARIANTS:
            raise World2ActError(f"variant {self.variant!r} is not one of {list(LOSS_VARIANTS)}")
        if self.negatives not in ("in_batch", "explicit"):
            raise World2ActError(f"negatives {self.negatives!r} is not one of ['in_batch', 'explicit']")
        if self.heldout not in ("wm", "random"):
            raise World2ActError(f"heldout {self.heldout!r} is not one of ['wm', 'random']")
        if self.latent_source not in ("denoised", "generated"):
            raise World2ActError(f"latent_source {self.latent_source!r} is not one of ['denoised', 'generated']")
        if not 0.0 <= self.hard_ratio <= 1.0:
            raise World2ActError(f"hard_ratio must be in [0, 1], got {self.hard_ratio}")
        for name in ("latent_dim", "num_negatives", "anchors_per_batch", "batch_size", "steps", "eval_every", "log_every",
                     "checkpoint_every", "wm_batch"):
            if int(getattr(self, name)) < 1:
                raise World2ActError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.video_rec < 0:
            raise World2ActError(f"video_rec must be >= 0, got {self.video_rec}")
        if self.tau <= 0 or self.lr <= 0 or self.lam < 0:
            raise World2ActError(f"tau and lr must be > 0 and lam >= 0 (got tau={self.tau}, lr={self.lr}, lam={self.lam})")
        if not 0.0 < self.val_fraction < 1.0:
            raise World2ActError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if len(self.betas) != 2:
            raise World2ActError(f"betas must be two numbers, got {self.betas}")


# --------------------------------------------------------------------------- checkpoints
def _save_state(d: Path, bundle: AlignmentBundle, opt: torch.optim.Optimizer, step: int, rng: np.random.Generator,
                extra: dict) -> None:
    from world2act.utils.training import save_training_state

    save_training_state(d, model_state=bundle.state_dict(), optimizer=opt, step=step,
                        extra={"rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **extra})


def _load_state(d: Path, bundle: AlignmentBundle, opt: torch.optim.Optimizer, rng: np.random.Generator) -> int:
    from world2act.utils.training import load_training_state

    if "format" not in read_json(d / "state.json") and (d / "state.safetensors").is_file():
        st = _read_legacy_state(d, opt)
    else:
        st = load_training_state(d, optimizer=opt)
    bundle.load_state_dict(st.model_state, where=str(st.folder / "model.safetensors"))
    torch.set_rng_state(st.extra["torch_rng"])
    rng.bit_generator.state = st.extra["rng"]
    return st.step


def _read_legacy_state(d: Path, opt: torch.optim.Optimizer):
    """A checkpoint from an older world2act: one ``state.safetensors`` with ``model.*``,
    ``norm.mean``/``norm.std``, ``opt.<i>.<name>`` and ``torch_rng``; restores ``opt`` in place."""
    from safetensors.torch import load_file

    from world2act.utils.training import TrainingState

    meta, t = read_json(d / "state.json"), load_file(str(d / "state.safetensors"))
    model = {k[6:]: v for k, v in t.items() if k.startswith("model.")}
    model.update({"normalizer.mean": t["norm.mean"], "normalizer.std": t["norm.std"]})
    sd, state = opt.state_dict(), {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({**sd, "state": state})
    return TrainingState(int(meta["step"]), model, None, {"rng": meta["rng"], "torch_rng": t["torch_rng"]}, d, legacy=True)


# --------------------------------------------------------------------------- training
def train_adapters(train: AlignData, val: AlignData | None, cfg: AlignConfig, adapter_cfg: AdapterConfig | None = None,
                   out: str | Path | None = None, resume: bool = False, device: str = "cpu", progress: bool = True,
                   desc: str = "align", tracker=None, tag_prefix: str = "") -> tuple[AlignmentBundle, list[dict]]:
    """Train f_v, f_a, g_a on ``train`` with L = L_rec + λ·L_NCE; evaluate on ``val``.

    Args:
        train, val: :class:`AlignData` (val may be None).
        cfg: :class:`AlignConfig` (loss, sampler, optimiser, schedule).
        adapter_cfg: dims/world-model info; A, K, C, latent_size are taken from ``train``.
        out: folder for ``curves.jsonl`` and the resumable ``checkpoint/`` (None: keep in memory).
        resume: continue from ``out/checkpoint`` when present.
        tracker: a :mod:`world2act.utils.tracking` tracker; each curve record is also logged there
            as ``{tag_prefix}train/…`` or ``{tag_prefix}heldout/…`` at its step.

    Returns:
        (bundle on CPU in eval mode, curve records). Records with ``kind == "train"`` hold
        ``step, loss, rec, nce, hard_fraction, grad_norm``; ``kind == "eval"`` the
        :func:`evaluate_bundle` metrics.
    """
    from world2act.utils.progress import progress_bar

    info = train.shape_info
    base = adapter_cfg or AdapterConfig()
    acfg = dataclasses.replace(base, action_dim=info["A"], chunk_size=info["K"], latent_channels=info["C"],
                               latent_size=tuple(info["latent_size"]), latent_dim=cfg.latent_dim, variant=cfg.variant)
    bundle = AlignmentBundle(acfg, seed=cfg.seed)
    bundle.normalizer.fit(train.actions[train.mask])
    bundle.to(device).train()
    rng = np.random.default_rng(cfg.seed)
    sampler = NegativeSampler(train.skill_ids, train.demo_ids, cfg.num_negatives, cfg.hard_ratio, seed=cfg.seed)
    params = list(bundle.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
    lat_all = train.latents
    act_all = bundle.normalize_actions(train.actions.to(device).float())
    mask_all = train.mask.to(device)

    out = Path(out) if out is not None else None
    start, curves = _resume(out, resume, bundle, opt, rng, desc)
    rc = _Recorder(curves, out, tracker, tag_prefix, val, bundle, cfg, device)
    if start == 0 and not any(c["kind"] == "eval" and c["step"] == 0 for c in curves):
        rc.evaluate(0)
    acc = {"loss": 0.0, "rec": 0.0, "nce": 0.0, "hard": 0, "neg": 0, "gn": 0.0, "n": 0}
    bar = progress_bar(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps, disable=not progress,
               dynamic_ncols=True, leave=False)
    for step in bar:
        nb = (sampler.in_batch(cfg.batch_size, rng) if cfg.negatives == "in_batch"
              else sampler.batch(cfg.anchors_per_batch, rng))
        parts, gn = _align_step(cfg, bundle, opt, params, nb, lat_all, act_all, mask_all, device)
        for k in ("loss", "rec", "nce"):
            acc[k] += parts[k]
        acc["hard"] += nb.num_hard
        acc["neg"] += nb.num_hard + nb.num_easy
        acc["gn"] += float(gn)
        acc["n"] += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = acc["n"]
            rec = {"kind": "train", "step": done, "loss": acc["loss"] / n, "rec": acc["rec"] / n, "nce": acc["nce"] / n,
                   "hard_fraction": acc["hard"] / max(1, acc["neg"]), "grad_norm": acc["gn"] / n}
            rc.record(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", rec=f"{rec['rec']:.3f}", nce=f"{rec['nce']:.3f}")
            acc = dict.fromkeys(acc, 0) | {"loss": 0.0, "rec": 0.0, "nce": 0.0, "gn": 0.0}
        if done % cfg.eval_every == 0 or done == cfg.steps:
            rc.evaluate(done)
        if out is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _save_state(out / CHECKPOINT, bundle, opt, done, rng, {"variant": cfg.variant})
    bar.close()
    return bundle.to("cpu").eval(), curves


def _resume(out: Path | None, resume: bool, bundle: AlignmentBundle, opt, rng: np.random.Generator,
            desc: str) -> tuple[int, list[dict]]:
    """Make ``out``; with ``resume`` restore the checkpoint (bundle, optimiser, both RNGs) and the
    curve records up to its step, else drop old curves; rewrite ``curves.jsonl`` to match.
    Returns ``(start_step, curves)`` (``(0, [])`` without ``out``)."""
    from world2act.utils.training import checkpoint_folder

    start = 0
    curves: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ck = out / CHECKPOINT
        if resume and checkpoint_folder(ck) is not None:
            start = _load_state(checkpoint_folder(ck), bundle, opt, rng)
            log.info("%s: resuming at step %d", desc, start)
            if (out / CURVES).is_file():
                curves = [json.loads(x) for x in (out / CURVES).read_text().splitlines() if x.strip()]
                curves = [c for c in curves if c["step"] <= start]
        elif (out / CURVES).exists():
            (out / CURVES).unlink()
        # rewrite curves consistently with the restored step
        with atomic_path(out / CURVES) as tmp:
            tmp.write_text("".join(json.dumps(c) + "\n" for c in curves))
    return start, curves


class _Recorder:
    """Where :func:`train_adapters` sends its curve records: the list, the tracker and
    ``out/curves.jsonl``; :meth:`evaluate` adds a held-out record."""

    def __init__(self, curves: list[dict], out: Path | None, tracker, tag_prefix: str, val, bundle: AlignmentBundle,
                 cfg: AlignConfig, device: str):
        self.curves, self.out, self.tracker, self.tag_prefix = curves, out, tracker, tag_prefix
        self.val, self.bundle, self.cfg, self.device = val, bundle, cfg, device

    def record(self, rec: dict) -> None:
        """Append ``rec`` to the curves, log it to the tracker and to ``curves.jsonl``."""
        self.curves.append(rec)
        if self.tracker is not None:
            self.tracker.log(rec, step=rec["step"],
                             prefix=f"{self.tag_prefix}{'heldout' if rec['kind'] == 'eval' else 'train'}/")
        if self.out is not None:
            with open(self.out / CURVES, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def evaluate(self, step: int) -> None:
        """Record :func:`evaluate_bundle` on the held-out data (when it has 2 samples or more)."""
        val, bundle = self.val, self.bundle
        if val is None or len(val) < 2:
            return
        bundle.eval()
        m = evaluate_bundle(bundle, val.latents, bundle.normalize_actions(val.actions.float().to(self.device)),
                            val.mask, val.skill_ids, val.demo_ids,
                            similarity="global" if self.cfg.variant == "global" else "chunk")
        bundle.train()
        self.record({"kind": "eval", "step": step, **m})


def _align_step(cfg: AlignConfig, bundle: AlignmentBundle, opt, params, nb, lat_all, act_all, mask_all,
                device: str):
    """One optimiser step on the sampled batch ``nb``: L_rec + λ·L_NCE (plus the optional video
    reconstruction term), clipped. Returns ``(parts, grad_norm)``."""
    idx = torch.from_numpy(nb.indices)
    lat = lat_all[idx].to(device).float()
    act = act_all[idx]
    m = mask_all[idx]
    v = bundle.f_v(lat)
    za = bundle.f_a(act)
    dec = bundle.g_a(za)
    loss, parts = stage1_loss(v, za, dec, act, variant=cfg.variant, lam=cfg.lam, tau=cfg.tau, margin=cfg.margin,
                              mask=m, candidates=nb.candidates.to(device), anchors=nb.anchors.to(device))
    if cfg.video_rec > 0:
        loss = loss + cfg.video_rec * reconstruction_loss(bundle.g_a(v), act, m)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    return parts, gn


def final_metrics(curves: list[dict]) -> dict:
    """The last eval record plus the mean of the last 5 train records (loss, rec, nce)."""
    ev = [c for c in curves if c["kind"] == "eval"]
    tr = [c for c in curves if c["kind"] == "train"]
    out: dict = {}
    if ev:
        out["heldout"] = {k: v for k, v in ev[-1].items() if k != "kind"}
        out["heldout_at_init"] = {k: v for k, v in ev[0].items() if k != "kind"} if ev[0]["step"] == 0 else None
    if tr:
        last = tr[-5:]
        out["train_final"] = {k: float(np.mean([c[k] for c in last])) for k in ("loss", "rec", "nce", "hard_fraction")}
        out["steps"] = tr[-1]["step"]
    return out


def plot_curves(curves: list[dict], path: Path, title: str = "Stage 1") -> None:
    """Loss curves (L, L_rec, L_NCE; cf. paper Fig. S2) and held-out retrieval / cosine as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [c for c in curves if c["kind"] == "train"]
    ev = [c for c in curves if c["kind"] == "eval"]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    if tr:
        s = [c["step"] for c in tr]
        ax[0].plot(s, [c["rec"] for c in tr], label="L_rec")
        ax[0].plot(s, [c["nce"] for c in tr], label="L_NCE")
        ax[0].plot(s, [c["loss"] for c in tr], label="L = L_rec + λ L_NCE", alpha=0.7)
        ax[0].set_yscale("log")
        ax[0].legend()
    ax[0].set(title=f"{title}: training loss", xlabel="step")
    if ev:
        s = [c["step"] for c in ev]
        ax[1].plot(s, [c["top1_v2a"] for c in ev], label="video→action")
        ax[1].plot(s, [c["top1_a2v"] for c in ev], label="action→video")
        ax[1].axhline(ev[-1]["chance"], ls="--", c="gray", label="chance")
        ax[1].legend()
        ax[2].plot(s, [c["pos_cos"] for c in ev], label="positive pairs")
        ax[2].plot(s, [c["neg_cos"] for c in ev], label="all negatives")
        if "hard_neg_cos" in ev[-1]:
            ax[2].plot(s, [c["hard_neg_cos"] for c in ev], label="hard negatives")
        ax[2].plot(s, [c["rec_mse"] for c in ev], label="rec. MSE (norm.)", ls=":")
        ax[2].legend()
    ax[1].set(title="held-out top-1 retrieval", xlabel="step")
    ax[2].set(title="held-out chunk-avg cosine", xlabel="step")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def variants_table(results: dict[str, dict]) -> str:
    """Markdown table (Table S3 analogue) from ``{variant: final_metrics}``."""
    rows = ["| variant | loss | similarity | top-1 v→a | top-1 a→v | ×chance (v→a / a→v) | pos cos | neg cos | cos gap | hard-neg cos | rec MSE |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    desc = {"bi_infonce": ("Bi InfoNCE", "chunk-wise"), "single_infonce": ("Single InfoNCE (a→v)", "chunk-wise"),
            "marginal": ("Marginal (hinge)", "chunk-wise"), "global": ("Bi InfoNCE", "global")}
    for v in LOSS_VARIANTS:
        if v not in results or "heldout" not in results[v]:
            continue
        h = results[v]["heldout"]
        rows.append(f"| {v} | {desc[v][0]} | {desc[v][1]} | {h['top1_v2a']:.3f} | {h['top1_a2v']:.3f} | "
                    f"{h['top1_v2a_x_chance']:.1f} / {h['top1_a2v_x_chance']:.1f} | {h['pos_cos']:.3f} | "
                    f"{h['neg_cos']:.3f} | {h['cos_gap']:.3f} | {h.get('hard_neg_cos', float('nan')):.3f} | {h['rec_mse']:.4f} |")
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- stage entry
def run(cfg: AlignConfig, out: str | Path, *, device: str = "cpu", resume: bool = False, overwrite: bool = False,
        data: AlignData | None = None, adapter_cfg: AdapterConfig | None = None, progress: bool = True,
        log_with: str = "none") -> dict:
    """Run Stage 1 end to end and write the bundle, ``metrics.json``, plots and manifest in ``out``.

    Args:
        cfg: :class:`AlignConfig` (``skills``/``wm`` required unless ``data`` is given).
        data: precomputed :class:`AlignData` (skips the world model; used by tests).
        log_with: experiment tracker (:mod:`world2act.utils.tracking`): the loss records, the
            held-out retrieval / cosine evaluations and the final held-out summary.

    Returns:
        the metrics dict written to ``metrics.json``.

    Raises:
        World2ActError: missing inputs, incompatible data, or a non-empty ``out`` without
            ``resume``/``overwrite``.
    """
    from world2act.utils.io import prepare_out_dir
    from world2act.utils.tracking import check_backend, make_tracker

    started = time.time()
    check_backend(log_with)
    if data is None:
        from world2act.align.wm_cache import check_inputs

        check_inputs(cfg)  # cheap checks before touching the output folder
    out = prepare_out_dir(out, resume=resume, overwrite=overwrite)
    with make_tracker(log_with, out, "align", dataclasses.asdict(cfg)) as tracker:
        return _run(cfg, out, device=device, resume=resume, data=data, adapter_cfg=adapter_cfg, progress=progress,
                    tracker=tracker, started=started)


def _run(cfg: AlignConfig, out: Path, *, device, resume, data, adapter_cfg, progress, tracker, started) -> dict:
    """Stage 1 once ``out`` is prepared and the tracker is open (see :func:`run`)."""
    from world2act.utils.manifest import write_manifest
    from world2act.utils.seeding import seed_everything

    seed_everything(cfg.seed)
    if data is None:
        from world2act.align.wm_cache import build_cache

        data, adapter_cfg = build_cache(cfg, out / "cache", device=device)
    adapter_cfg = adapter_cfg or AdapterConfig()
    wm_held = np.asarray(data.info.get("wm_heldout_demos") or [], dtype=np.int64)
    is_held = np.isin(data.demo_ids, wm_held)
    if cfg.heldout == "wm" and is_held.any() and not is_held.all():
        # the world model's own held-out demonstrations: unseen by the WM and by the adapters
        tr_idx, va_idx = np.nonzero(~is_held)[0], np.nonzero(is_held)[0]
        split_source = "wm"
    else:
        groups = {int(k): v for k, v in (data.info.get("demo_groups") or {}).items()} or None
        tr_idx, va_idx = split_by_demo(data, cfg.val_fraction, cfg.seed, groups)
        split_source = "random"
    train, val = data.subset(tr_idx), data.subset(va_idx)
    log.info("align: %d train / %d held-out windows (%d / %d demonstrations), T'=%d, K=%d, A=%d, C=%d",
             len(train), len(val), len(np.unique(train.demo_ids)), len(np.unique(val.demo_ids)),
             *[data.shape_info[k] for k in ("T", "K", "A", "C")])
    if len(np.unique(train.skill_ids)) < 2:
        raise World2ActError(f"{cfg.skills or 'data'}: need at least 2 distinct skills for easy negatives, found "
                             f"{len(np.unique(train.skill_ids))}")
    split = {"source": split_source, "train_windows": len(train), "heldout_windows": len(val),
             "train_demos": int(len(np.unique(train.demo_ids))), "heldout_demos": int(len(np.unique(val.demo_ids))),
             "heldout_demo_ids": sorted(int(x) for x in np.unique(val.demo_ids)),
             "skills": len(data.skill_names) or int(len(np.unique(data.skill_ids)))}

    variants = [cfg.variant] + ([v for v in LOSS_VARIANTS if v != cfg.variant] if cfg.compare else [])
    results: dict[str, dict] = {}
    main_bundle = None
    for v in variants:
        vcfg = dataclasses.replace(cfg, variant=v)
        vout = out / "train" if v == cfg.variant else out / "variants" / v
        bundle, curves = train_adapters(train, val, vcfg, adapter_cfg, vout, resume=resume, device=device,
                                        progress=progress, desc=f"align[{v}]", tracker=tracker,
                                        tag_prefix="" if v == cfg.variant else f"variants/{v}/")
        results[v] = final_metrics(curves)
        plot_curves(curves, (out if v == cfg.variant else vout) / "loss_curves.png", title=f"Stage 1 ({v})")
        if v == cfg.variant:
            main_bundle = bundle
        else:
            bundle.save(vout / "bundle")
    assert main_bundle is not None
    main_bundle.save(out)
    h = results[cfg.variant].get("heldout", {})
    metrics = {
        "variant": cfg.variant, **({"heldout_summary": heldout_summary(h)} if h else {}),
        **results[cfg.variant], "split": split, "data": data.shape_info,
        "targets": {
            "retrieval_x_chance_min": 5.0,
            "retrieval_ok": bool(h and min(h["top1_v2a_x_chance"], h["top1_a2v_x_chance"]) >= 5.0),
            "rec_mse_max": 0.05, "rec_ok": bool(h and h["rec_mse"] <= 0.05),
        },
    }
    if cfg.compare:
        metrics["variants"] = results
        table = variants_table(results)
        metrics["variants_table"] = table
        from world2act.utils.io import atomic_write

        atomic_write(out / "variants.md", "# Stage 1 loss variants (Table S3 analogue), held-out\n\n" + table)
    write_json(out / "metrics.json", metrics)
    tracker.log({"heldout_summary": metrics.get("heldout_summary", {}), "targets": metrics["targets"]},
                step=results[cfg.variant].get("steps"))
    write_manifest(out, stage="align", config=cfg, inputs={"skills": cfg.skills, "wm": cfg.wm}, metrics=metrics,
                   started=started)
    return metrics


# --------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = AlignConfig, ("resume", "overwrite", "log_with")


def main(cfg: AlignConfig, args) -> int:
    from world2act.utils.seeding import resolve_device, set_torch_threads

    set_torch_threads()
    metrics = run(cfg, args.out, device=resolve_device(args.device), resume=args.resume, overwrite=args.overwrite,
                  log_with=args.log_with)
    h = metrics.get("heldout", {})
    if h:
        print(f"held-out: top-1 v→a {h['top1_v2a']:.3f}, a→v {h['top1_a2v']:.3f} (chance {h['chance']:.3f}); "
              f"cos pos {h['pos_cos']:.3f} vs neg {h['neg_cos']:.3f}; rec MSE {h['rec_mse']:.4f}")
        s = metrics.get("heldout_summary") or {}
        if s and s["same_skill_chance"] == s["same_skill_chance"]:  # not NaN: skill labels were there
            print(f"held-out, same skill only: top-1 v→a {s['same_skill_top1_v2a']:.3f}, a→v {s['same_skill_top1_a2v']:.3f} "
                  f"(chance {s['same_skill_chance']:.3f}); hard-negative cos {s['hard_neg_cos']:.3f} "
                  f"(gap {s['hard_cos_gap']:.3f})")
    print(f"wrote {args.out}")
    return 0

"""Probe (issue 15): fine-tune Stage 1's action autoencoder f_a, g_a on on-policy chunks.

Reads a ``scripts/dagger_oracle.py collect`` file (base chunks and expert relabels; the init
states the oracle fit holds out are excluded here too) and trains ``g_a(f_a(x)) ≈ x`` on them,
reporting the held-out round-trip distance (mean |·|, normalised units) before and after. f_v is
untouched, so the Stage-1 alignment is not preserved: this measures the latent's *resolution*
on on-policy chunks, not a Stage 1 to post-train with.

    python scripts/finetune_action_ae.py --align runs/mw/align --data runs/mw/dag/round0.safetensors \
        --steps 1500 --out runs/mw/align-onpolicy      # round trip 0.444 -> 0.060 (docs/results.md)
"""
from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--align", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from world2act.align import AlignmentBundle

    torch.manual_seed(args.seed)
    b = AlignmentBundle.load(args.align)
    d = load_file(args.data)
    valid = d["valid"].bool()
    held = ((d["seed"] % 100_000) % 6) == 5  # the oracle fit's held-out init states
    tr, te = valid & ~held[:, None], valid & held[:, None]
    X = torch.cat([d["relabels"][tr], d["base_chunks"][tr]])

    @torch.no_grad()
    def round_trip(x: torch.Tensor) -> float:
        return float((b.g_a(b.f_a(x)) - x).abs().mean())

    print(f"before: held-out round trip relabels {round_trip(d['relabels'][te]):.3f} base {round_trip(d['base_chunks'][te]):.3f}")
    params = list(b.f_a.parameters()) + list(b.g_a.parameters())
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.steps):
        x = X[torch.randint(len(X), (128,), generator=g)]
        loss = ((b.g_a(b.f_a(x)) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"after {args.steps} steps: held-out round trip relabels {round_trip(d['relabels'][te]):.3f} "
          f"base {round_trip(d['base_chunks'][te]):.3f}")
    b.save(args.out)


if __name__ == "__main__":
    main()

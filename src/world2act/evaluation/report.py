"""``eval.md`` (tables) and ``success.png`` (bar plot) from an ``eval.json`` result, and the
markdown of a paired comparison of two results (``paired.md``, the pipeline's ``report.md``)."""
from __future__ import annotations

from pathlib import Path

from world2act.evaluation.latency import load_note
from world2act.evaluation.stats import format_p


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def markdown_table(result: dict) -> str:
    """Per-task success table plus the overall row, as GitHub markdown."""
    seeds = result["protocol"]["seeds"]
    head = "| task | instruction | success % | 95% CI | successes / trials | errors | " + \
           " | ".join(f"seed {s}" for s in seeds) + " |"
    sep = "|---|---|---:|---|---:|---:|" + "---:|" * len(seeds)
    rows = [head, sep]
    for key, t in result["per_task"].items():
        lo, hi = t["ci95"]
        rows.append(f"| {key} | {t.get('instruction', '')} | {_pct(t['success_rate'])} | {_pct(lo)}–{_pct(hi)} | "
                    f"{t['n_success']} / {t['n_trials']} | {t['n_errors']} | "
                    + " | ".join(_pct(t["per_seed"].get(str(s))) for s in seeds) + " |")
    o = result["overall"]
    lo, hi = o["ci95"]
    std = "" if o["seed_std"] is None else f" ± {100 * o['seed_std']:.1f} (seed std)"
    rows.append(f"| **mean** | | **{_pct(o['success_rate'])}**{std} | {_pct(lo)}–{_pct(hi)} | "
                f"{o['n_success']} / {o['n_trials']} | {o['n_errors']} | "
                + " | ".join(_pct(o["per_seed"].get(str(s))) for s in seeds) + " |")
    return "\n".join(rows)


def paired_figures(pc: dict) -> str:
    """The figures of a :func:`~world2act.evaluation.stats.paired_comparison` result in words:
    difference, its 95% interval, McNemar exact p and the discordant pairs (needs ``n`` > 0)."""
    lo, hi = pc["ci95"]
    return (f"difference {pc['diff']:+.3f} (95% CI {lo:+.3f} … {hi:+.3f}), McNemar exact p = {format_p(pc['mcnemar_p'])} "
            f"({pc['improved']} episodes fixed, {pc['regressed']} broken)")


def paired_table(pc: dict, labels: dict | None = None, base: str = "base", post: str = "post") -> list[str]:
    """Per-task paired table (markdown lines) of a
    :func:`~world2act.evaluation.stats.paired_comparison` result, with an ``all`` row.

    Success rates are over the paired episodes only; ``labels`` maps a task key to its display
    name (e.g. the instruction); ``base`` / ``post`` name the two runs in the header.
    """
    labels = labels or {}
    rows = [f"| task | paired episodes | {base} SR | {post} SR | difference ({post} − {base}) | fixed | broken | McNemar exact p |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task, t in (pc.get("per_task") or {}).items():
        rows.append(f"| {labels.get(task) or task} | {t['n']} | {t['base_sr']:.3f} | {t['post_sr']:.3f} | {t['diff']:+.3f} | "
                    f"{t['fixed']} | {t['broken']} | {format_p(t['mcnemar_p'])} |")
    if pc.get("n"):
        lo, hi = pc["ci95"]
        rows.append(f"| **all** | {pc['n']} | {pc['base_sr']:.3f} | {pc['post_sr']:.3f} | "
                    f"**{pc['diff']:+.3f}** (95% CI {lo:+.3f} … {hi:+.3f}) | {pc['improved']} | {pc['regressed']} | "
                    f"**{format_p(pc['mcnemar_p'])}** |")
    return rows


def markdown_report(result: dict) -> str:
    """The whole ``eval.md``."""
    p = result["protocol"]
    lines = [f"# Evaluation: {result['policy']} on {result['benchmark']}", ""]
    if not result.get("complete"):
        lines += ["**Incomplete run** (interrupted): the numbers below cover the finished episodes only.", ""]
    lines += [f"Protocol: {p['trials']} trials × {len(p['seeds'])} seed(s) {p['seeds']} per task; step budget "
              f"{p['step_budget']} after settle steps; {p['init_states']}. Counting: {p['counting']}.", "",
              markdown_table(result), ""]
    lat = result.get("latency")
    if lat and "ms_per_chunk" in lat:
        lines += ["## Inference speed (batch 1, apart from simulation; cf. paper Table S5)", "",
                  "| policy | chunk K | ms / chunk | ms / action | Hz (actions/s) | threads |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| {result['policy_info'].get('name')} | {lat['chunk_size']} | {lat['ms_per_chunk']:.2f} | "
                  f"{lat['ms_per_action']:.2f} | {lat['hz']:.1f} | {lat['threads']} |", ""]
        note = load_note(lat)
        if note:
            lines += [f"**{note}**", ""]
    tm = result["timing"]
    lines += ["## Throughput", "",
              f"{tm['episodes_run']} episodes in {tm['wall_s']} s with {tm['workers']} worker(s) "
              f"({tm['episodes_per_min']} episodes/min; mean episode {tm['mean_episode_s']} s, of which policy "
              f"{tm['mean_policy_s_per_episode']} s and observation/rendering {tm['mean_obs_s_per_episode']} s).", ""]
    if result.get("errors"):
        lines += ["## Errors", ""] + [f"- task {e['task']} seed {e['seed']} trial {e['trial']}: {e['error']}"
                                      for e in result["errors"][:50]] + [""]
    if result.get("videos"):
        lines += ["## Videos", ""] + [f"- [videos/{v}](videos/{v})" for v in result["videos"]] + [""]
    return "\n".join(lines)


def bar_plot(result: dict, path: str | Path) -> None:
    """Per-task success rate with Wilson 95% intervals, saved as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from world2act.utils.io import atomic_path

    keys = list(result["per_task"])
    rates = [100 * (result["per_task"][k]["success_rate"] or 0) for k in keys]
    lo = [r - 100 * result["per_task"][k]["ci95"][0] for r, k in zip(rates, keys)]
    hi = [100 * result["per_task"][k]["ci95"][1] - r for r, k in zip(rates, keys)]
    o = result["overall"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(keys) + 2), 3.2))
    ax.bar(range(len(keys)), rates, yerr=[lo, hi], capsize=3, color="#4C72B0")
    if o["success_rate"] is not None:
        ax.axhline(100 * o["success_rate"], color="#C44E52", ls="--", lw=1, label=f"mean {100 * o['success_rate']:.1f}%")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(keys)), [f"task {k}" for k in keys], rotation=45 if len(keys) > 6 else 0, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%)")
    ax.set_title(f"{result['policy_info'].get('name')} on {result['benchmark']}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(out: str | Path, result: dict) -> None:
    """Write ``eval.md`` and ``success.png`` into ``out``."""
    from world2act.utils.io import atomic_write

    out = Path(out)
    atomic_write(out / "eval.md", markdown_report(result))
    bar_plot(result, out / "success.png")

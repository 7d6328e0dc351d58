"""world2act: World2Act latent action post-training via skill-compositional world models.

Paper: "World2Act: Latent Action Post-Training via Skill-Compositional World Models".
Stages (see ``docs/`` and the README): collect -> segment -> train-wm -> train-base ->
align (Stage 1) -> post-train (Stage 2) -> eval, orchestrated by ``world2act pipeline``.
"""

__version__ = "0.1.0"


class World2ActError(Exception):
    """A user-facing error: bad input, a missing or corrupt file, mismatched components.

    The CLI prints ``error: <message>`` on one line and exits with status 2. Messages name
    the offending file or option and, where it helps, the valid choices.
    """

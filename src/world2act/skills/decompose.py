"""Language stream of the skill decomposition: global instruction -> ordered atomic skills.

Paper Sec. 3.1 and appendix E decompose each high-level instruction into low-level skill
prompts using manually defined *task schemas* that fix a standard skill vocabulary. This
module is the deterministic, offline *schema decomposer* (the default of ``world2act segment``);
:mod:`world2act.skills.llm` is the LLM decomposer of the paper.

Skill vocabulary (:data:`VOCABULARY`): every verb has an *event kind* that says which gripper
events end the skill (used by :func:`world2act.skills.sync.align_schema`):

* ``grasp`` (``pick``): ends when the gripper has closed on the object (a ``close`` event).
* ``release`` (``place``, ``stack``, ``insert``, ``remove``, ``hammer``, tool ``push``/``pull``):
  acts with the held object and ends when the gripper has re-opened (an ``open`` event).
* ``interact`` (``open``, ``close``, ``turn on``, ``turn off``, ``turn``, ``push``, ``pull``,
  ``press``, ``slide``, ``sweep``, ``reach``, ``insert``, ``lock``, ``unlock``): acts on the
  scene without carrying; ends after a full close+open cycle when prehensile, and may have no
  event at all when it is non-prehensile (only allowed for the last skill).

Grammar (covers every LIBERO suite instruction and every Meta-World instruction of
:mod:`world2act.envs.metaworld_instructions`): clauses are split on ``" and "`` / ``", then "``
/ ``" then "`` when the next word is a vocabulary verb (so ``"the yellow and white mug"`` and
``"both the alphabet soup and the tomato sauce"`` stay intact). Clauses:

* ``pick up X`` -> ``pick up X`` (grasp). X may keep its locating phrase
  (``"the black bowl next to the ramekin"``); later steps use its head (``"the black bowl"``).
* ``put|place|move X <loc>`` -> ``pick up X`` + ``place X <loc>``; when X is ``it`` and the
  object is already held, only ``place``. ``put both A and B <loc>`` -> two pick/place pairs;
  ``put both moka pots <loc>`` -> ``one moka pot`` / ``the other moka pot``.
* ``stack A on B`` -> ``pick up A`` + ``stack A on B``; a following ``them`` is the stack.
* ``open|close|turn on|turn off X`` and other interaction verbs -> one ``interact`` skill.
  ``it`` after ``close``/``open`` is the last mentioned articulated object (``"the bottom
  drawer of the cabinet"``); ``it`` inside a location is the last mentioned scene object
  (``"turn on the stove and put the moka pot on it"``); a bare ``inside`` gets that object.
* A verb acting on the scene while an object is held (``"pick up the stick and pull the
  container with it"``, ``"... and insert it into the hole"``) is a ``release`` skill.

Example::

    >>> [s.prompt for s in decompose_instruction(
    ...     "put both the alphabet soup and the tomato sauce in the basket")]
    ['pick up the alphabet soup', 'place the alphabet soup in the basket',
     'pick up the tomato sauce', 'place the tomato sauce in the basket']
"""
from __future__ import annotations

import dataclasses
import re

from world2act import World2ActError

#: verb -> default event kind (see module docstring). Verbs acting with a held object
#: (insert, remove, hammer, push/pull/slide/sweep/press with a tool) are ``release`` skills
#: when they follow a pick, ``interact`` otherwise.
VOCABULARY: dict[str, str] = {
    "pick": "grasp",
    "place": "release", "stack": "release", "insert": "release", "remove": "release", "hammer": "release",
    "open": "interact", "close": "interact", "turn on": "interact", "turn off": "interact", "turn": "interact",
    "push": "interact", "pull": "interact", "press": "interact", "slide": "interact", "sweep": "interact",
    "reach": "interact", "lock": "interact", "unlock": "interact",
}
KINDS = ("grasp", "release", "interact")

_CLAUSE_VERBS = {"pick", "place", "put", "move", "open", "close", "turn", "push", "pull", "press", "slide",
                 "sweep", "reach", "insert", "lock", "unlock", "hammer", "grasp", "grab", "take", "lift",
                 "remove", "stack"}
_PICK_VERBS = {"pick", "grasp", "grab", "take", "lift"}
_PUT_VERBS = {"put", "place", "move"}
_INTERACT_VERBS = {"open", "close", "push", "pull", "press", "slide", "sweep", "reach", "insert", "lock",
                   "unlock", "turn", "hammer", "remove"}
_HELD_ACTION_VERB = {"insert": "insert", "remove": "remove", "hammer": "hammer", "pull": "pull", "push": "push",
                     "slide": "slide", "sweep": "sweep", "press": "press"}
# Words that begin a locating / destination phrase after a noun phrase.
_PREPS = {"between", "next", "from", "on", "in", "at", "to", "out", "off", "under", "inside", "into", "onto",
          "behind", "near", "beside", "above", "below", "over", "with", "away", "back", "by", "toward",
          "towards", "underneath", "within", "across", "through", "sideways", "up", "down", "of", "for"}
_ARTICULATED = ("drawer", "microwave", "door", "cabinet", "window", "faucet", "stove", "oven", "lid", "box",
                "basket", "tray", "bowl", "caddy", "bin", "rack", "shelf", "plate", "hole", "hoop", "goal")
_ARTICULATED_FIRST = ("drawer", "microwave", "door", "window", "faucet", "oven", "stove", "cabinet")
_PRONOUNS = {"it", "them"}


class UnparseableInstruction(World2ActError):
    """The schema decomposer cannot parse an instruction (message names it and the clause)."""


@dataclasses.dataclass(frozen=True)
class SkillStep:
    """One atomic skill of a decomposed instruction.

    Attributes:
        verb: vocabulary verb (a key of :data:`VOCABULARY`), e.g. ``"pick"``, ``"turn on"``.
        kind: ``"grasp" | "release" | "interact"`` (which gripper events end it).
        prompt: the low-level language prompt, e.g. ``"place the alphabet soup in the basket"``.
    """

    verb: str
    kind: str
    prompt: str


def _norm(text: str) -> str:
    t = text.strip().lower().rstrip(".!")
    t = re.sub(r"[;,]\s*(and\s+)?then\s+", " and ", t)
    t = re.sub(r"\s+then\s+", " and ", t)
    t = re.sub(r",\s*and\s+", " and ", t)
    return re.sub(r"\s+", " ", t).strip()


def split_clauses(instruction: str) -> list[str]:
    """Split a normalised instruction on ``" and "`` only where a vocabulary verb follows."""
    words = _norm(instruction).split(" ")
    clauses, cur = [], []
    for i, w in enumerate(words):
        if w == "and" and cur and i + 1 < len(words) and words[i + 1] in _CLAUSE_VERBS:
            # "pick up X and place it", not "the yellow and white mug"
            clauses.append(" ".join(cur))
            cur = []
            continue
        cur.append(w)
    if cur:
        clauses.append(" ".join(cur))
    return clauses


def _split_np(words: list[str]) -> tuple[list[str], list[str]]:
    """Split ``words`` into (noun phrase, rest starting at the first preposition)."""
    for i, w in enumerate(words):
        if i > 0 and w in _PREPS:
            return words[:i], words[i:]
    return words, []


def _head(phrase: str) -> str:
    return " ".join(_split_np(phrase.split())[0])


def _articulated_np(phrase: str) -> str | None:
    """The noun phrase of the first articulated/scene object in ``phrase`` ("the top drawer of the cabinet")."""
    words = phrase.split()
    for vocab in (_ARTICULATED_FIRST, _ARTICULATED):
        for j, w in enumerate(words):
            if w in vocab:
                start = j
                while start > 0 and words[start - 1] not in _PREPS:
                    start -= 1
                stop = j + 1
                while stop + 1 < len(words) and words[stop] == "of":  # "drawer of the cabinet"
                    k = stop + 1
                    while k < len(words) and words[k] not in _PREPS:
                        k += 1
                    stop = k
                return " ".join(words[start:stop])
    return None


def _strip_preps(loc: list[str]) -> str:
    i = 0
    while i < len(loc) and loc[i] in _PREPS:
        i += 1
    return " ".join(loc[i:])


class _State:
    def __init__(self) -> None:
        self.held: str | None = None  # head NP of the held object
        self.last_obj: str | None = None  # last manipulated object (head)
        self.last_scene: str | None = None  # last mentioned scene object (location / interaction target)
        self.stack: str | None = None  # what "them" means after a stack


def _resolve_loc(loc: list[str], st: _State, instruction: str) -> str:
    out: list[str] = []
    for w in loc:
        if w in _PRONOUNS:
            if st.last_scene is None:
                raise UnparseableInstruction(f"instruction {instruction!r}: cannot resolve {w!r} in location")
            out.extend(st.last_scene.split())
        else:
            out.append(w)
    if out == ["inside"] or out == ["in"]:
        if st.last_scene is None:
            raise UnparseableInstruction(f"instruction {instruction!r}: 'inside' without a container")
        out = ["inside", *st.last_scene.split()]
    return " ".join(out)


def _both(np_words: list[str]) -> list[tuple[str, str]] | None:
    """``both A and B`` -> [(A, A)...]; ``both moka pots`` -> one / the other. Returns (pick NP, place NP)."""
    if not np_words or np_words[0] != "both":
        return None
    rest = np_words[1:]
    if "and" in rest:
        # "both the alphabet soup and the tomato sauce": split at an 'and' followed by a determiner
        for i, w in enumerate(rest):
            if w == "and" and i + 1 < len(rest) and rest[i + 1] in {"the", "a", "an"}:
                a, b = " ".join(rest[:i]), " ".join(rest[i + 1:])
                return [(a, a), (b, b)]
        i = rest.index("and")
        a, b = " ".join(rest[:i]), " ".join(rest[i + 1:])
        return [(a, a), (b, b)]
    noun = " ".join(w for w in rest if w != "the")
    sing = noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun
    return [(f"one {sing}", f"the {sing}"), (f"the other {sing}", f"the other {sing}")]


def _parse_clause(clause: str, st: _State, instruction: str) -> list[SkillStep]:
    words = clause.split()
    if not words:
        raise UnparseableInstruction(f"instruction {instruction!r}: empty clause")
    verb, rest = words[0], words[1:]
    if verb in _PICK_VERBS:
        if rest[:1] == ["up"]:
            rest = rest[1:]
        obj = " ".join(rest)
        if not rest or obj in _PRONOUNS:
            raise UnparseableInstruction(f"instruction {instruction!r}: 'pick' without an object in {clause!r}")
        st.held = st.last_obj = _head(obj)
        return [SkillStep("pick", "grasp", f"pick up {obj}")]
    if verb in _PUT_VERBS or verb == "stack":
        np_words, loc = _split_np(rest)
        if not np_words or not loc:
            raise UnparseableInstruction(f"instruction {instruction!r}: expected '{verb} OBJECT LOCATION' in {clause!r}")
        place_verb = "stack" if verb == "stack" else "place"
        pairs = _both(np_words)
        steps: list[SkillStep] = []
        if pairs is None:
            obj = " ".join(np_words)
            if obj == "them":
                if st.stack is None:
                    raise UnparseableInstruction(f"instruction {instruction!r}: cannot resolve 'them' in {clause!r}")
                obj = st.stack
            if obj == "it":
                if st.held is None and st.last_obj is None:
                    raise UnparseableInstruction(f"instruction {instruction!r}: cannot resolve 'it' in {clause!r}")
                obj = st.held or st.last_obj
            pairs = [(obj, obj)]
        for pick_np, place_np in pairs:
            head = _head(place_np)
            loc_s = _resolve_loc(loc, st, instruction)
            if st.held is None or st.held != head:
                steps.append(SkillStep("pick", "grasp", f"pick up {pick_np}"))
            steps.append(SkillStep(place_verb, "release", f"{place_verb} {head} {loc_s}"))
            st.held = None
            st.last_obj = head
            target = _strip_preps(loc_s.split())
            st.last_scene = _articulated_np(loc_s) or target or st.last_scene
            if verb == "stack":
                a, b = head.split()[-1], _head(target).split()[-1]
                st.stack = f"the stacked {a}s" if a == b else "the stack"
        return steps
    two = " ".join(words[:2])
    if two in ("turn on", "turn off"):
        verb, rest = two, words[2:]
    if verb in _INTERACT_VERBS or verb in ("turn on", "turn off"):
        obj_words = list(rest)
        # resolve pronouns
        if obj_words[:1] == ["it"]:
            if st.held is not None and verb in _HELD_ACTION_VERB:
                obj_words = st.held.split() + obj_words[1:]
            else:
                target = st.last_scene if verb in ("open", "close", "turn on", "turn off") else (st.last_scene or st.last_obj)
                if target is None:
                    raise UnparseableInstruction(f"instruction {instruction!r}: cannot resolve 'it' in {clause!r}")
                obj_words = target.split() + obj_words[1:]
        if not obj_words:
            raise UnparseableInstruction(f"instruction {instruction!r}: {verb!r} without an object in {clause!r}")
        if "it" in obj_words and st.held is not None:  # "pull the container with it" (tool use)
            obj_words = [w for x in obj_words for w in (st.held.split() if x == "it" else [x])]
        obj = " ".join(obj_words)
        if st.held is not None and verb in _HELD_ACTION_VERB:
            st.held = None
            st.last_scene = _articulated_np(obj) or _head(obj)
            return [SkillStep(_HELD_ACTION_VERB[verb], "release", f"{verb} {obj}")]
        if verb not in VOCABULARY:
            raise UnparseableInstruction(f"instruction {instruction!r}: verb {verb!r} needs a held object in {clause!r}")
        st.last_scene = _articulated_np(obj) or _head(obj)
        return [SkillStep(verb, "interact", f"{verb} {obj}")]
    raise UnparseableInstruction(
        f"instruction {instruction!r}: clause {clause!r} starts with {verb!r}, not a skill verb; "
        f"valid: {', '.join(sorted(_CLAUSE_VERBS))} (use --decomposer llm for free-form instructions)")


def decompose_instruction(instruction: str) -> list[SkillStep]:
    """Decompose a global instruction into ordered atomic skills with the task schemas.

    Args:
        instruction: the episode's language instruction (case and final period ignored).

    Returns:
        Ordered :class:`SkillStep` list (at least one).

    Raises:
        UnparseableInstruction: a clause does not start with a vocabulary verb, or a pronoun
            cannot be resolved (the message names the instruction and the clause).
    """
    if not instruction or not instruction.strip():
        raise UnparseableInstruction("empty instruction")
    st = _State()
    steps: list[SkillStep] = []
    for clause in split_clauses(instruction):
        steps.extend(_parse_clause(clause, st, instruction))
    return steps


def schema_of(steps: list[SkillStep]) -> list[str]:
    """The task schema: the verb sequence, e.g. ``["pick", "place"]``."""
    return [s.verb for s in steps]


class SchemaDecomposer:
    """Deterministic, offline decomposer with a per-instruction cache.

    ``decompose(instruction) -> list[SkillStep]`` (raises :class:`UnparseableInstruction`).
    """

    name = "schema"

    def __init__(self) -> None:
        self._cache: dict[str, list[SkillStep]] = {}

    def decompose(self, instruction: str) -> list[SkillStep]:
        if instruction not in self._cache:
            self._cache[instruction] = decompose_instruction(instruction)
        return self._cache[instruction]

"""Skill decomposition (paper Sec. 3.1-3.2, appendix E): demonstrations -> atomic-skill clips.

Modules: :mod:`~world2act.skills.contacts` (closure signal, debounced gripper events),
:mod:`~world2act.skills.decompose` (schema decomposer of instructions),
:mod:`~world2act.skills.llm` (LLM aligner for OpenAI-compatible endpoints),
:mod:`~world2act.skills.sync` (boundary placement, pairing, sync rate),
:mod:`~world2act.skills.stats` (length distributions, Fig. 3 plot),
:mod:`~world2act.skills.segment` (the ``world2act segment`` command; ``run(SegmentConfig)``).
"""
from world2act.skills.contacts import ContactEvent, ContactParams, closure_signal, debounce, detect_events
from world2act.skills.decompose import SchemaDecomposer, SkillStep, UnparseableInstruction, decompose_instruction
from world2act.skills.sync import Alignment, EpisodeSegmentation, align_schema, sync_summary

__all__ = [
    "Alignment", "ContactEvent", "ContactParams", "EpisodeSegmentation", "SchemaDecomposer", "SkillStep",
    "UnparseableInstruction", "align_schema", "closure_signal", "debounce", "decompose_instruction",
    "detect_events", "sync_summary",
]

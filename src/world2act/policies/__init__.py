"""Policies: the contract (:class:`Policy`), the fitted :class:`Normalizer`, the built-in
flow-matching base policy, the scripted expert as a policy, and :func:`load_policy`.

Heavy modules (the flow policy, the residual policy) load lazily through :func:`load_policy`.
"""
from world2act.policies.base import Policy, batch_observations, benchmark_info, check_obs
from world2act.policies.io import load_policy, policy_types, read_policy_config, register_policy_type
from world2act.policies.normalizer import Normalizer

__all__ = ["Policy", "Normalizer", "load_policy", "register_policy_type", "policy_types",
           "read_policy_config", "batch_observations", "benchmark_info", "check_obs"]

"""Speculative decoding: draft proposers, the acceptance rule and the per-row draft policy."""
from .acceptance import verify_run
from .config import SpeculationConfig
from .policy import DraftPolicy
from .proposer import PromptLookup, Proposer

__all__ = ["DraftPolicy", "PromptLookup", "Proposer", "SpeculationConfig", "verify_run"]

"""recip: an experiment orchestrator for ablation studies of reciprocal GPT-2 variants."""

__version__ = "0.1.0"

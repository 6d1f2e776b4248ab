"""Model code: the baseline GPT-2 and every reciprocal mechanism, registered by name.

This package imports torch only in the modules that need it; `models.presets` is plain data
so that the orchestrator (which never imports torch) can resolve sizes from it.
"""

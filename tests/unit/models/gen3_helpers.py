"""The Generation-3 tests' view of the shared tiny-model helpers (default attention: causal)."""

from tests.unit.models.tiny_models import (  # noqa: F401  (re-exported for the test modules)
    D_FF,
    HEAD_DIM,
    N_EMBD,
    N_HEAD,
    N_LAYER,
    VOCAB,
    T,
    assert_causal,
    baseline_block_params,
    batch,
    build,
    cfg,
    copy_shared,
    grad_norms,
    logits,
    meta_counts,
    one_step_lowers_loss,
    tokens,
)

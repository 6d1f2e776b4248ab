"""The `recip` command: the composition root. Heavy modules (torch, ray, workers, models,
rich) are imported inside command bodies, so `recip status` never pays for torch."""

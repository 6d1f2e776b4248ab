"""The analysis of a study: `analysis` (pure: results -> Report) over `context` (the typed
spec and the runs used), `stats` (compare, Holm, alpha spending), `verdicts` (every
comparison decided together), `confounders`, `rules` (flags and rules), `flags` (the per-run
flags of `recip status`, no statistics), `values` (the frozen Report); `export` (Markdown,
JSON), `plots` (PNG, matplotlib imported lazily).

Nothing is imported here: `recip status` imports `flags` without `stats` and its scipy."""

"""Pure domain code: spec models, resolution, ids, states, errors. Imports stdlib and pydantic only."""

"""Small, self-contained experiments that back the harness's design choices (see docs/notes/)."""

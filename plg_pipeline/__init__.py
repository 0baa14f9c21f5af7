"""plg_pipeline: expansion-revenue triggers from product events (see README.md)."""

import os

JEMALLOC_CONF = "dirty_decay_ms:5000,muzzy_decay_ms:5000"
"""Polars' allocator (jemalloc) hands freed pages back to the kernel after 0.5 s, so each
arrival day's buffers were faulted in afresh: a fifth of ingestion's CPU went to the kernel.
Kept 5 s, they serve the next day (10M events, ingest 47.2 and 44.7 -> 39.7 and 41.3 s, its
peak 2.1 -> 2.7 GiB). Polars appends this variable to its own settings when it loads, so it
is set before any import of Polars; a value the environment already holds wins."""
os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)

"""The allocator setting reaches Polars: set on importing the package, before Polars loads."""

from __future__ import annotations

import os
import subprocess
import sys

# stats_print makes jemalloc print the options it runs with when the process exits; added after
# the package's import, it shows what that import left for Polars to pass on.
PROBE = (
    "import os, plg_pipeline; os.environ['_RJEM_MALLOC_CONF'] += ',stats_print:true'; "
    "import polars as pl; pl.DataFrame({'a': [1]})"
)


def _decay(extra: dict[str, str]) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | extra
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    opts = dict(
        line.strip().split(": ", 1)
        for line in done.stderr.splitlines()
        if line.strip().startswith(("opt.dirty_decay_ms", "opt.muzzy_decay_ms"))
    )
    return opts["opt.dirty_decay_ms"].split()[0], opts["opt.muzzy_decay_ms"].split()[0]


def test_polars_runs_with_the_package_decay():
    assert _decay({}) == ("5000", "5000")


def test_a_decay_the_environment_sets_wins():
    assert _decay({"_RJEM_MALLOC_CONF": "dirty_decay_ms:1000"}) == ("1000", "1000")

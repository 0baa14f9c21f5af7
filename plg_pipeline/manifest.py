"""Make sure the dbt manifest exists before anything imports the definitions.

`@dbt_assets` reads target/manifest.json at import time. `dagster dev` parses the project by
itself (`prepare_if_dev`), but the CLI, the tests and CI do not, so they call this first.
project.py is loaded by file, as `dagster-dbt project prepare-and-package --file` does:
importing plg_pipeline.defs.metrics.project would first run the package's __init__, which
builds the @dbt_assets that need this very manifest.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

PROJECT_FILE = Path(__file__).parent / "defs" / "metrics" / "project.py"


def ensure_dbt_manifest(force: bool = False) -> Path:
    """Parse the dbt project when its manifest is missing (or always, with force)."""
    project_module = runpy.run_path(str(PROJECT_FILE))
    project = project_module["dbt_project"]
    if force or not project.manifest_path.exists():
        venv_bin = str(Path(project_module["DBT_EXECUTABLE"]).parent)
        old_path = os.environ.get("PATH", "")
        # the preparer calls plain `dbt`: make the venv's one findable without activation
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{old_path}"
        try:
            project.preparer.prepare(project)
        finally:
            os.environ["PATH"] = old_path
    return project.manifest_path

"""What the Dagster UI shows of every asset: a description, a stage's group and who is paged."""

import pytest
import yaml

from plg_pipeline.lib.configfile import PACKAGE_CONFIG_DIR, ConfigError, load_config
from plg_pipeline.lib.pipeline_config import PipelineConfig, pipeline_config


def test_every_asset_has_a_description_a_group_and_its_stage_owners(dbt_manifest):
    from plg_pipeline.definitions import defs

    configured = {
        owner for team in pipeline_config().owners.model_dump().values() for owner in team
    }
    specs = defs.resolve_all_asset_specs()
    assert len(specs) > 40  # the graph itself, not an empty list passing vacuously
    for spec in specs:
        name = spec.key.to_user_string()
        assert spec.description and len(spec.description.split()) >= 3, name
        assert spec.group_name not in (None, "default"), name
        assert spec.owners and set(spec.owners) <= configured, name


def test_every_check_we_wrote_says_what_it_checks(dbt_manifest):
    """dbt's tests are named for what they test; the Python checks carry a description."""
    from plg_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    ours = [s for s in specs if "dagster_dbt/unique_id" not in (s.metadata or {})]
    assert len(ours) < len(specs) and ours  # both kinds are there
    for spec in ours:
        assert spec.description and len(spec.description.split()) >= 5, spec.key.to_user_string()


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (lambda owners: owners.pop("privacy"), "owners.privacy", "Field required"),
        (lambda owners: owners.update(scoring=[]), "owners.scoring", "at least 1 item"),
        (lambda owners: owners.update(actions=["growth"]), "owners.actions.0", "pattern"),
        (lambda owners: owners.update(scorng=["team:growth"]), "owners.scorng", "Extra inputs"),
    ],
)
def test_a_stage_without_a_valid_owner_fails_the_load_naming_the_key(tmp_path, edit, key, message):
    data = yaml.safe_load((PACKAGE_CONFIG_DIR / "pipeline.yaml").read_text())
    edit(data["owners"])
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path, PipelineConfig)
    assert raised.value.key == key and raised.value.path == str(path)

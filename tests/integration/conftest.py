import pytest

from workflow import SMOKE, copy_workflow, snakemake


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, shared_data):
    """The acceptance command, run once per session (the workflow tests and the SLURM test
    compare against it): APOT_DATA_MIRROR=../shared/data snakemake --cores 2 --config
    preset=smoke on_missing_data=skip."""
    folder = copy_workflow(tmp_path_factory.mktemp("smoke") / "study")
    done = snakemake(folder, *SMOKE, APOT_DATA_MIRROR=str(shared_data))
    return folder, done.stdout + done.stderr

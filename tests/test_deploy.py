"""The deployment files agree with the code, and the code stays cheap to import in every step process."""

import subprocess
import sys
from pathlib import Path

import yaml

from hotdog_dagster.core.settings import load_profile
from hotdog_dagster.defs.automation.executors import celery_config, executor_for
from hotdog_dagster.defs.shared import GPU_NODE_SELECTOR, GPU_QUEUE

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def test_celery_workers_and_executor_share_one_broker_and_settings() -> None:
    """Workers started with deploy/celery/celery.yaml listen where the profile's executor sends steps."""
    profile = load_profile(DEPLOY / "celery" / "profile.yaml")
    assert profile.scale.executor == "celery"
    worker = yaml.safe_load((DEPLOY / "celery" / "celery.yaml").read_text())
    assert worker["execution"]["config"] == celery_config(profile.scale)
    assert executor_for(profile.scale).name == "celery"


def test_compose_runs_a_gpu_queue_worker_and_a_default_queue_worker() -> None:
    compose = yaml.safe_load((DEPLOY / "celery" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "webserver", "daemon", "worker-gpu", "worker-cpu"} <= set(services)
    gpu, cpu = services["worker-gpu"]["command"], services["worker-cpu"]["command"]
    assert gpu[gpu.index("-q") + 1] == GPU_QUEUE and cpu[cpu.index("-q") + 1] == "dagster"
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_instance_file_is_postgres_with_a_run_queue_and_one_step_per_pool() -> None:
    instance = yaml.safe_load((DEPLOY / "celery" / "dagster.yaml").read_text())
    assert "postgres_db" in instance["storage"]["postgres"]
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["concurrency"]["pools"]["default_limit"] == 1


def test_helm_values_launch_k8s_jobs_with_the_data_root_and_a_k8s_profile() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert {m["mountPath"] for m in deployment["volumeMounts"]} == {"/data", "/config"}
    assert {"name": "HOTDOG_HOME", "value": "/data"} in deployment["env"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    profile = load_profile(DEPLOY / "helm" / "profile.yaml")
    assert profile.scale.executor == "k8s" and executor_for(profile.scale).name == "k8s"
    assert GPU_NODE_SELECTOR == {"nvidia.com/gpu.present": "true"}


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == "scripts/setup.sh && pip install -e '.[dev]' && python -m pytest"
    assert f"```bash\n{ci}\n```" in (REPO / "README.md").read_text()


def test_loading_the_definitions_imports_no_model_library() -> None:
    """Every run and step process loads the definitions: torch and open_clip load inside the steps that use them."""
    code = (
        "import sys, hotdog_dagster.definitions\n"
        "print(','.join(m for m in ('torch', 'open_clip', 'torchvision', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

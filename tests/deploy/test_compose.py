"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the services
and their wiring, every file they mount or copy, and the image's health check run for
real against a gateway."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from tests.deploy.artifacts import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _binds(service: str) -> dict[str, str]:
    """host path -> container path of a service's bind mounts."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[source] = target
    return out


def _container_path_to_host(service: str, container_path: str):
    for source, target in _binds(service).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return REPO / source / container_path[len(target) :].lstrip("/")
    return None


def test_the_stack_has_its_services_and_vllm_only_under_the_gpu_profile():
    assert {"gateway", "redis", "prometheus", "grafana", "vllm"} <= set(SERVICES)
    assert SERVICES["vllm"]["profiles"] == ["gpu"]
    assert all("profiles" not in s for name, s in SERVICES.items() if name != "vllm")
    devices = SERVICES["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_every_bind_mount_exists_and_every_named_volume_is_declared():
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    build = SERVICES["gateway"]["build"]
    assert (REPO / (build if isinstance(build, str) else build["context"]) / "Dockerfile").exists()


def test_redis_persists_and_the_gateway_shares_it():
    redis = SERVICES["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    gateway = SERVICES["gateway"]
    assert re.match(r"redis://redis:6379/", gateway["environment"]["GATEWAY_REDIS_URL"])
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in redis


def test_the_gateway_config_in_compose_is_a_mounted_valid_policy():
    from gateway.config.loader import load_config

    path = _container_path_to_host("gateway", SERVICES["gateway"]["environment"]["GATEWAY_CONFIG"])
    assert path is not None and path.exists()
    config, _ = load_config(path)
    assert config.routes


def test_prometheus_scrapes_the_gateway_service_and_loads_the_rules():
    prometheus = SERVICES["prometheus"]
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = _container_path_to_host("prometheus", config_arg.split("=", 1)[1])
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).exists()
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["gateway"]
    assert sd["port"] == int(SERVICES["gateway"]["ports"][0].rsplit(":", 1)[1])


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard():
    grafana = SERVICES["grafana"]
    provisioning = _container_path_to_host("grafana", "/etc/grafana/provisioning")
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "gateway.yml").read_text())["providers"][0]
    dashboards = _container_path_to_host("grafana", provider["options"]["path"])
    assert (dashboards / "gateway.json").exists()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _container_path_to_host("grafana", home).exists()


def test_compose_variables_all_have_defaults():
    """`docker compose up` must work without an .env file."""
    text = (REPO / "docker-compose.yml").read_text()
    bare = [m for m in re.findall(r"\$\{([^}]*)\}", text) if ":-" not in m]
    assert bare == []


def test_dockerfile_is_non_root_with_a_health_check_and_installs_from_the_lock():
    final_stage = DOCKERFILE.split("\nFROM ")[-1]
    user = re.search(r"^USER\s+(\S+)", final_stage, re.M).group(1)
    assert user not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD", final_stage, re.M)
    assert "/health" in final_stage
    assert re.search(r"pip install --constraint requirements\.lock \.", DOCKERFILE)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies missing {path}"
    exposed = re.search(r"^EXPOSE (\d+)", final_stage, re.M).group(1)
    assert f"GATEWAY_PORT={exposed}" in final_stage
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _healthcheck_command() -> list[str]:
    import json

    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", DOCKERFILE)
    command = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_image_health_check_command_passes_on_a_serving_gateway_and_fails_otherwise(start_gateway):
    from tests.support.ports import free_port

    gw = start_gateway((REPO / "policies" / "default.yaml").read_text())
    command = _healthcheck_command()
    ok = subprocess.run(command, env={**os.environ, "GATEWAY_PORT": str(gw.port)}, capture_output=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(
        command, env={**os.environ, "GATEWAY_PORT": str(free_port())}, capture_output=True, timeout=20
    )
    assert down.returncode != 0


def _commented_backend(name: str) -> dict:
    """A backend policies/default.yaml ships commented out, as it reads once uncommented."""
    lines = (REPO / "policies" / "default.yaml").read_text().splitlines()
    start = lines.index(f"  # {name}:") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  #   "):
            break
        block.append(line[len("  #   ") :])
    return yaml.safe_load("\n".join(block))


def test_the_gpu_profile_serves_the_model_the_commented_local_vllm_backend_asks_for():
    """Uncommenting local-vllm and adding its model to a route is all `--profile gpu` needs."""
    from gateway.config.loader import parse_config

    command = SERVICES["vllm"]["command"]
    served = re.fullmatch(r"\$\{VLLM_SERVED_NAME:-(.+)\}", command[command.index("--served-model-name") + 1])
    backend = _commented_backend("local-vllm")
    ((model, offer),) = backend["models"].items()
    assert offer["upstream_id"] == served.group(1)
    assert re.fullmatch(r"\$\{VLLM_MODEL:-(.+)\}", command[command.index("--model") + 1]).group(1) == served.group(1)
    assert "VLLM_BASE_URL" in backend["base_url"]
    assert SERVICES["gateway"]["environment"]["VLLM_BASE_URL"] == "${VLLM_BASE_URL:-http://vllm:8000/v1}"
    policy = yaml.safe_load((REPO / "policies" / "default.yaml").read_text())
    policy["backends"]["local-vllm"] = backend
    policy["routes"]["auto"]["models"].append(model)
    config, _ = parse_config(yaml.safe_dump(policy), "default.yaml with local-vllm")
    assert model in config.routes["auto"].models


def test_the_gateway_gets_every_api_key_a_shipped_policy_or_a_vendor_names():
    """Keys come from the environment or .env (the README): compose passes a container only the
    variables listed for it, so a key the policy reads but compose omits is empty inside."""
    from gateway.config.vendors import VENDORS

    policies = "".join(p.read_text() for p in sorted((REPO / "policies").rglob("*.yaml")))
    keys = set(re.findall(r"\$\{([A-Z0-9_]+_API_KEY)", policies))
    keys |= {vendor.key_env for vendor in VENDORS.values() if vendor.key_env}
    assert {"ANTHROPIC_API_KEY", "FIREWORKS_API_KEY", "VLLM_API_KEY"} <= keys
    environment = SERVICES["gateway"]["environment"]
    for key in keys:
        assert environment.get(key) == f"${{{key}:-}}", key
    # Every other variable a shipped policy reads too (the multi-provider example's vLLM
    # addresses): set in .env and not listed, the policy's fallback address was used inside.
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", policies))
    assert {"VLLM_A_URL", "VLLM_B_URL", "VLLM_BASE_URL"} <= read
    assert read - set(environment) == set()


def test_published_ports_listen_on_the_loopback_unless_the_operator_says_otherwise():
    """By default the gateway has no client keys and Grafana's admin password is `admin`:
    `docker compose up` must not offer them to the network until an address is set."""
    published = [(name, port) for name, service in SERVICES.items() for port in service.get("ports", [])]
    assert {name for name, _ in published} == {"gateway", "prometheus", "grafana"}
    for name, port in published:
        address = re.fullmatch(r"\$\{([A-Z_]+_PUBLISH_ADDRESS):-([^}]*)\}:.+:\d+", port)
        assert address and address.group(2) == "127.0.0.1", f"{name} publishes {port}"


def test_docker_stop_waits_for_the_drain_and_the_usage_flush():
    """SIGTERM starts the drain (up to GATEWAY_SHUTDOWN_GRACE_S), then the recorder writes
    what it holds (up to GATEWAY_USAGE_SHUTDOWN_FLUSH_S): Docker's SIGKILL must come after
    both, with a margin for the writer process to exit."""
    from gateway.settings import Settings

    environment = SERVICES["gateway"]["environment"]

    def seconds(name: str) -> float:
        field = name.removeprefix("GATEWAY_").lower()
        value = environment.get(name)
        return float(value) if value is not None else Settings.model_fields[field].default

    grace = re.fullmatch(r"(\d+)s", SERVICES["gateway"]["stop_grace_period"])
    drain, flush = seconds("GATEWAY_SHUTDOWN_GRACE_S"), seconds("GATEWAY_USAGE_SHUTDOWN_FLUSH_S")
    assert int(grace.group(1)) >= drain + flush + 5


def test_the_scale_out_command_publishes_a_host_port_per_replica():
    """Docker binds a published host port for one container only: `--scale gateway=3` with
    the single default port 8080 started one replica and failed the others ("port is already
    allocated"). The command the file gives must publish a range with a port for each."""
    header = (REPO / "docker-compose.yml").read_text()
    command = re.search(r"`([^`]*--scale gateway=(\d+)[^`]*)`", header)
    assert command, "docker-compose.yml shows how to scale out"
    replicas = int(command.group(2))
    published = re.fullmatch(
        r"\$\{[A-Z_]+:-[^}]*\}:\$\{GATEWAY_PUBLISH_PORT:-(\d+)\}:8080", SERVICES["gateway"]["ports"][0]
    )
    assert published, SERVICES["gateway"]["ports"]
    port = re.search(r"\bGATEWAY_PUBLISH_PORT=(\S+)", command.group(1))
    host_ports = port.group(1) if port else published.group(1)  # what the command sets, else the default
    first, _, last = host_ports.partition("-")
    assert int(last or first) - int(first) + 1 >= replicas, command.group(1)


def _container_environment(service: str, host_env: dict[str, str]) -> dict[str, str]:
    """What a container's `environment:` becomes under compose's interpolation (`${NAME}`,
    `${NAME:-default}`, empty counting as unset for `:-`), given the host's environment or .env."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return host_env.get(name) or default if match.group(2) else host_env.get(name, "")

    pattern = re.compile(r"\$\{([A-Z0-9_]+)(:-([^}]*))?\}")
    return {name: pattern.sub(value, str(raw)) for name, raw in SERVICES[service]["environment"].items()}


def test_the_access_settings_an_operator_puts_in_env_reach_the_gateway(monkeypatch, tmp_path):
    """The README has an operator who serves other hosts set the gateway's access settings in
    the environment or .env; a container sees only the variables compose lists for it, so
    GATEWAY_REQUIRE_KEYS (never open when a wiped Redis lost the virtual keys), the trusted
    proxies and the log level were silently no setting at all. Unset, each keeps its default."""
    from gateway.settings import Settings

    operator_env = {
        "GATEWAY_API_KEYS": "ops:sk-ops",
        "GATEWAY_REQUIRE_KEYS": "true",
        "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8",
        "GATEWAY_LOG_LEVEL": "debug",
    }
    for host_env, expected in (
        (operator_env, (True, "10.0.0.0/8", "debug")),
        ({}, (False, "", "info")),
    ):
        for name in list(os.environ):
            if name.startswith("GATEWAY_"):
                monkeypatch.delenv(name)
        for name, value in _container_environment("gateway", host_env).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
        settings = Settings()
        assert (settings.require_keys, settings.trusted_proxies, settings.log_level) == expected

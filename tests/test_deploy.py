"""docker-compose.yml and its config files, checked without Docker: the compose-spec JSON schema
(as check-jsonschema ships it), then what the schema cannot know: dependencies, health checks,
settings names, the scrape and proxy targets, the image's build context."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from server import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema is strict about unknown keys: a typo in a service is caught (so the check can fail).
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_onn"] = ["postgres"]
    assert any("depends_onn" in e.message for e in validator.iter_errors(broken))


def test_every_service_it_needs_is_there_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "qdrant", "api", "lb", "prometheus", "otel-collector"} <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2  # two API instances behind the load balancer
    for name in ("postgres", "redis", "qdrant", "api", "lb", "prometheus"):
        assert services[name]["healthcheck"]["test"], name


def test_depends_on_conditions_can_be_met(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on an unknown service {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy"
            elif condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a one-shot job"
    api = services["api"]["depends_on"]
    assert api["postgres"]["condition"] == "service_healthy"
    assert api["migrate"]["condition"] == "service_completed_successfully"
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_api_environment_names_real_settings_and_reaches_the_other_services(compose: dict[str, Any]) -> None:
    settings = {f.name.upper() for f in dataclasses.fields(Settings)}
    for name in ("migrate", "api"):
        env = compose["services"][name]["environment"]
        unknown = set(env) - settings
        assert unknown == set(), f"{name}: not settings: {unknown}"
        # from_env reads them the way the service gives them (no SystemExit on a bad value).
        read = Settings.from_env({k: str(v) for k, v in env.items()})
        assert read.redis_url == "redis://redis:6379/0" and read.qdrant_url == "http://qdrant:6333"
        assert read.database_url is not None and "@postgres:5432/" in read.database_url
        assert read.otel_exporter_otlp_endpoint == "http://otel-collector:4318"
        assert read.workers >= 2 and read.host == "0.0.0.0"
    postgres = compose["services"]["postgres"]["environment"]
    assert read.database_url == (f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
                                 f"@postgres:5432/{postgres['POSTGRES_DB']}")


def test_the_config_files_point_at_the_api(compose: dict[str, Any]) -> None:
    mounted = {volume.split(":")[0] for service in compose["services"].values()
               for volume in service.get("volumes", []) if volume.startswith("./")}
    for path in mounted:
        assert (ROOT / path).is_file(), path
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["dns_sd_configs"][0]["names"] == ["api"]
    assert job["dns_sd_configs"][0]["port"] == 8000
    collector = yaml.safe_load((ROOT / "deploy/otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    nginx = (ROOT / "deploy/nginx.conf").read_text()
    assert re.search(r"server api:8000", nginx) and "proxy_pass http://api" in nginx


def test_the_image_is_built_from_files_that_exist() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source
    assert 'CMD ["python", "server.py", "serve"]' in dockerfile

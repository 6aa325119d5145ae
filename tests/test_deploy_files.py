"""Deployment files agree with the configuration: render.yaml declares every variable."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "TELEGRAM_BOT_TOKEN",
    "LUNARA_ENCRYPTION_KEY",
    "GEMINI_API_KEY",
    "LUNARA_TOKEN",
    "REDIS_URL",
}


def documented_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_render_worker_declares_every_variable_and_keeps_secrets_out() -> None:
    text = (ROOT / "render.yaml").read_text()
    assert "type: worker" in text  # no port scan
    declared = set(re.findall(r"- key: ([A-Z0-9_]+)", text))
    # PORT is set by the platform itself (web services only), never declared.
    assert declared == documented_variables() - {"PORT"}
    for secret in SECRETS:
        block = text.split(f"- key: {secret}\n", 1)[1].split("\n", 1)[0]
        assert "sync: false" in block, secret


def test_dockerfile_runs_as_non_root_without_exposed_port() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER lunara$", text, flags=re.MULTILINE)
    assert not re.search(r"^EXPOSE", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["lunara", "run"]' in text
    assert 'lunara", "status", "--quiet"' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", ".lunara", "tests"):
        assert entry in ignored

"""/metrics counts the workers of each function by the state of its models, and the
models they hold, as the workers report them to the store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.apps import replica_app
from tests.support.http_fixtures import ServerFactory, wait_until


def test_metrics_show_the_workers_model_state(make_server: ServerFactory, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_APP_LOG", str(tmp_path / "model.log"))
    live = make_server(app=replica_app.app, devices=["cpu", "cpu"])
    with httpx.Client(base_url=live.url, timeout=10) as http:
        def scraped() -> str | None:
            text = http.get("/metrics").text
            ready = 'genq_function_workers{function="where",state="ready"} 2.0'
            return text if ready in text else None

        text = wait_until(scraped, what="both replicas to report their model ready")
    assert 'genq_function_workers{function="where",state="loading"} 0.0' in text
    assert 'genq_models_loaded{model="weights"} 2.0' in text

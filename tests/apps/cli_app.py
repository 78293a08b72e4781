"""An app whose function takes inputs named like the ``genq run`` options (``url``,
``output``, ``server``), as the demo's ``download_model`` takes ``url``."""

from __future__ import annotations

import genq

app = genq.App("cli-tests")


@app.function()
def fetch(url: str, output: str = "-", server: str = "none", retries: int = 0) -> str:
    return f"url={url} output={output} server={server} retries={retries}"

"""The demo workloads moved into subpackages (``genq.demo``, ``genq.downloads``); the
import paths that earlier releases documented still give the same module objects."""

from __future__ import annotations

import importlib


def test_old_import_paths_are_the_new_modules() -> None:
    new_llm = importlib.import_module("genq.demo.llm")
    assert importlib.import_module("genq.llm") is new_llm
    new_policy = importlib.import_module("genq.downloads.policy")
    assert importlib.import_module("genq.download_policy") is new_policy
    from genq.download_policy import DownloadPolicy
    from genq.llm import ChatModel

    assert ChatModel is new_llm.ChatModel
    assert DownloadPolicy is new_policy.DownloadPolicy


def test_downloads_package_exports_what_the_readme_uses() -> None:
    import genq.downloads as downloads
    from genq.downloads.transfer import download

    assert downloads.download is download
    assert downloads.DownloadPolicy is importlib.import_module(
        "genq.downloads.policy").DownloadPolicy
    for name in downloads.__all__:
        assert getattr(downloads, name) is not None

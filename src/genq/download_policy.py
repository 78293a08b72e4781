"""The import path ``genq.download_policy`` of earlier releases: the download guard now
lives in ``genq.downloads.policy``. This module is that module (one object, not a copy)."""

import sys

from genq.downloads import policy as _policy

sys.modules[__name__] = _policy

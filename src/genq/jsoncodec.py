"""The JSON genq writes: compact (no spaces), and canonical (sorted keys) where equal
values must give equal text (cache keys, idempotent submissions).

One pre-built encoder each: ``json.dumps`` builds a new ``JSONEncoder`` on every call
with non-default arguments, which shows up on the hot path of event appends.
"""

from __future__ import annotations

import json

compact_json = json.JSONEncoder(separators=(",", ":")).encode
canonical_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode

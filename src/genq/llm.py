"""The import path ``genq.llm`` of earlier releases: the demo's chat model now lives in
``genq.demo.llm``. This module is that module (one object, not a copy), so patches and
the process-wide model are shared whichever name is imported."""

import sys

from genq.demo import llm as _llm

sys.modules[__name__] = _llm

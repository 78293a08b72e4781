"""Storage backends behind one protocol."""

from genq.store.base import NewEvent, Store, SubmitPolicy, Submitted
from genq.store.sqlite import SQLiteStore

__all__ = ["NewEvent", "SQLiteStore", "Store", "SubmitPolicy", "Submitted"]

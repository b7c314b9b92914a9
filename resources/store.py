"""DuckDBStoreResource: the DuckDB catalog and where curated subsets are exported."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from ._env import read_env


class DuckDBStoreResource(ConfigurableResource):
    """Wraps ``forvalue.catalog.db.Catalog`` (schema and queries from sql/)."""

    path: str = Field(default=".forvalue/forvalue.duckdb", description="DuckDB catalog file. Env: FORVALUE_DB")
    export_dir: str = Field(default=".forvalue/subsets", description="folder for curated subsets (JSONL, Parquet, PNG). Env: FORVALUE_SUBSETS")
    lock_timeout: float = Field(default=300.0, description="seconds a connection waits for another process's lock")
    memory_limit: str = Field(default="1GB", description="DuckDB memory before it spills to <catalog>.tmp/ (keeps "
                                                         "registration of any size in flat memory); empty: DuckDB's "
                                                         "default, 80% of RAM. Env: FORVALUE_DUCKDB_MEMORY")

    @classmethod
    def from_env(cls) -> "DuckDBStoreResource":
        return read_env(cls, {"path": "FORVALUE_DB", "export_dir": "FORVALUE_SUBSETS",
                              "memory_limit": "FORVALUE_DUCKDB_MEMORY"})

    def catalog(self):
        from forvalue.catalog.db import Catalog

        return Catalog(Path(self.path), lock_timeout=self.lock_timeout, memory_limit=self.memory_limit or None)

    def subset_folder(self, dataset: str, valuation_set: str) -> Path:
        return Path(self.export_dir) / dataset / valuation_set

"""The DuckDB schema, views and named queries (*.sql), installed as the package ``forvalue.sql``."""

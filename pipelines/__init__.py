"""The Dagster code location: cxr-warehouse ingestion as partitioned assets with blocking quality gates.

This package only wires `warehouse` functions together; all reading, staging, checking and
publishing logic lives in the `warehouse` library, which never imports Dagster.
"""

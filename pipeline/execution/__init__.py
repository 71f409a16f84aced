"""Execution: resumable per-shard runs, joblib/Dask placement, the work-folder lock, recorded settings, logging,
provenance, and the per-shard jobs of ``prepare`` and ``extract``."""

"""spotshift's workload: the API, the worker, the bucket-backed job queue and the storage interface."""

__version__ = "0.1.0"

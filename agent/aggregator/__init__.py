"""The central side: ingest service, verified store, offline verification and queries."""

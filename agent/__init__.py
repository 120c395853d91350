"""logseal: a node-level audit-log shipper with sealed batches and a tamper-evident aggregator."""

__version__ = "0.1.0"

"""SIEM forwarding of the aggregator's stored events (syslog, Splunk HEC, Elasticsearch, webhook).

`config` (the `[[forward]]` table), pure `ocsf` and `formats`, I/O in `transport`, `senders` and
`source`, and the loop with cursor, backoff and dead letters in `forwarder`.
"""

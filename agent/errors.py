"""One exception hierarchy, translated at the CLI boundary into one-line errors and exit codes.

    LogsealError
    ├── ConfigError      bad or missing configuration (exit 2 at start)
    ├── KeyFileError     unreadable, malformed or too-open key file
    ├── SealError        a batch cannot be built (e.g. too large)
    ├── SpoolCorrupt     a spool record fails its checksum or framing
    └── StoreError       the aggregator store cannot be opened or read
"""


class LogsealError(Exception):
    """Base of every error logseal raises on purpose."""


class ConfigError(LogsealError):
    pass


class KeyFileError(ConfigError):
    pass


class SealError(LogsealError):
    pass


class SpoolCorrupt(LogsealError):
    pass


class StoreError(LogsealError):
    pass

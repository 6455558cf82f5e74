"""What every layer shares: errors, result I/O and provenance, statistics, metric declarations, labels, the locked
environment."""

"""The control protocol between shims, the CLI and the daemon (newline-delimited JSON)."""

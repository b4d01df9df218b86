"""zeropodctl: the operator's command line, a client of the daemon's control socket."""

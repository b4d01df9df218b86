"""The zeropod node daemon: registry of managed containers, their phases, the control server."""

"""End-to-end tests and their helpers (the node, CRI client, images, HTTP from the node)."""

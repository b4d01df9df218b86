"""Work inside a pod's network namespace from the node (sysctls; more to come)."""

"""Installing zeropod on a node: the steps both installers share (Ansible role, DaemonSet)."""

"""containerd-shim-zeropod-v2: a ttrpc interposer in front of containerd-shim-runc-v2.

containerd talks to this shim exactly as to the runc shim; the interposer forwards every task
API call and event, and gives the scale-to-zero logic one interception point per method.
"""

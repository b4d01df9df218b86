"""zeropod: scale idle Kubernetes containers to zero with CRIU and wake them on demand."""

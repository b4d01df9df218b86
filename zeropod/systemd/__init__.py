"""systemd behind small modules: unit names (`names`), the Manager's jobs over D-Bus
(`manager`) and the transient socket units that hold a sleeping container's ports
(`socket_unit`)."""

"""The activated service ``zeropod@<instance>.service``: hands a sleeping pod's held sockets to
the daemon (standard library only: it is on the wake path)."""

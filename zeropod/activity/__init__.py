"""Idle tracking: which TCP traffic reached a container's ports, and how long ago.

``sockdiag`` reads the pod netns's TCP sockets and freed connections over sock_diag,
``sources`` says which client addresses do not count, ``tracker`` turns snapshots into
``idle_for``, and ``monitor`` (``python3 -m zeropod.activity``) prints that live as JSON.
"""

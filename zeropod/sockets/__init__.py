"""The listening sockets of a running app, seen and changed from outside the app.

`listeners` finds a process's listening TCP sockets (from /proc), `pidfd` takes duplicates of
another process's file descriptors (pidfd_open + pidfd_getfd), and `reuseport` sets
SO_REUSEPORT on the app's own socket so a holder can join its reuseport group before the app is
checkpointed (DESIGN.md, "Gapless scale-down"). `synlog` records the SYNs a held listener
gets, with an eBPF socket filter (`bpf`: its assembler and syscalls). Linux only; touching
another process's sockets needs root (ptrace access to it).
"""

"""Isolation: root filesystems, namespaces (bubblewrap), cgroups, seccomp and the user-mode network."""

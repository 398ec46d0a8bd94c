"""The nsjail backend: processes in namespaces, cgroups and seccomp."""

"""Host mechanics shared by the backends: supervision (one loop) and reporting (one
classify), cgroups, workspaces, warm pools, slots, seccomp, egress. Nothing here imports a
backend or anything above."""

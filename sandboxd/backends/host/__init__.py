"""Host mechanics shared by the backends: supervision, cgroups, workspaces, warm pools,
slots, seccomp, egress. Nothing here imports a backend or anything above."""

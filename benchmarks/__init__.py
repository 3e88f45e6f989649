"""The side-by-side benchmark of pgvip against keepalived + a check script and HAProxy, run in the
netns lab (`python -m benchmarks`; see BENCHMARKS.md). Never imported by the daemon."""

"""The `ideal` command line: one entry point for every stage (prepare, train, evaluate, dub, export, serve, bench)."""

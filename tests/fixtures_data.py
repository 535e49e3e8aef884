"""Session-scoped real datasets for the tests (owned by the prepare stage)."""

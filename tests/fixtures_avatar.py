"""Session-scoped trained avatars for the tests (owned by the model stage)."""

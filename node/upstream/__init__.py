"""Clients of the upstream registries: where content comes from when no peer has it."""

"""Generated from proto/tracker/v1/tracker.proto by tracker.protogen."""

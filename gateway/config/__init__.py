"""The routing YAML: its schema (`schema`), how it is read and checked (`loader`), and the
immutable runtime snapshot built from it (`snapshot`). Hot reload lives in `reload`."""

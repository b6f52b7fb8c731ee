"""Repository tooling: code generation and the demo."""

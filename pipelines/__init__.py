"""Kubeflow pipelines of Celo: sources, the compiled YAML next to them, and the compiler."""

"""The pipeline stages, one module each; ``python -m stages.<name>`` runs one (dvc.yaml does)."""

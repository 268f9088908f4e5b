"""Model manifests, the bundled demo model, its training recipe, and model tooling."""

"""Ready configs (YAML), shipped as package data: `demo.yaml` is the demo's."""

"""The kopf operator for LoRAFineTune resources."""

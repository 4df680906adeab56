"""The LoRA fine-tuning trainer (runs in the trainer pod). Kept import-light: no torch at package import."""

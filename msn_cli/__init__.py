"""msn: convert Meta's original MSN ViT checkpoints into Hugging Face transformers models."""

__version__ = "0.1.0"

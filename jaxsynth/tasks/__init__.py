"""Downstream tasks that consume real and synthetic images (e.g. the rare-tumour classifier)."""

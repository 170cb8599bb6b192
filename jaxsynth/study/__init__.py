"""The end-to-end rare-tumour study (`jaxsynth run`) and the synthetic-ratio sweep."""

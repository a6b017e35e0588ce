"""Datasets: the registry, image-folder archives, sources (download or mirror), prepared tensors, loaders."""

"""Population training: K same-architecture MLPs trained at once as stacked tensors."""

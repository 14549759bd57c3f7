"""Thin resolvers: read arguments, call loaders, shape what the schema types wrap."""

"""DataLoaders, one per entity and key, built per request."""

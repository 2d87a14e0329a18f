"""The filter machinery: the Filter contract, the registry, metadata access, composition, apply."""

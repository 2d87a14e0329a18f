"""Built-in filters, imported as `curate.filters` (one module per filter family)."""

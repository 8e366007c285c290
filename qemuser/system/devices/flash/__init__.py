"""Flash memory: CFI NOR flash."""

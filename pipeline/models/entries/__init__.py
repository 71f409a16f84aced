"""The built-in model registrations, one module per model family; every module here is imported by the registry."""

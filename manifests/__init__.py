"""The shipped OuluVS2 split definitions (JSON), installed as the package ``pipeline.recipes.split_files``."""

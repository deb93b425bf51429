"""Small shared helpers: atomic file output, config checks, guarded instantiation."""

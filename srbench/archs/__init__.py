"""Network architectures shared by several method plugins."""

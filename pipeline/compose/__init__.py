"""From a composed Hydra config to a runnable experiment: the schemas and their validation, data
files and input checks, resource estimates, cached constants, and the build itself. Everything
here runs before any work starts, so a bad input is one line before anything runs."""

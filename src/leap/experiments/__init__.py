"""The experiments of the paper: each declares its configuration, methods and report; the CLI dispatches to them."""

"""ccctl, the command-line client of ccd."""

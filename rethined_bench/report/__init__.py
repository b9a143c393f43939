"""Reports: paper-style tables from the results store and their output formats."""

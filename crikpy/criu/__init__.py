"""Everything that speaks to CRIU. Only this package imports pycriu, and only when it is used."""

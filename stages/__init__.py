"""One thin module per CLI stage: parse options, call the library, report."""

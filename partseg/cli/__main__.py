"""`python3 -m partseg.cli ...` (what torchrun and the tests use)."""

from partseg.cli import main

main()

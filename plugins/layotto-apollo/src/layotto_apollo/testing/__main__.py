"""`python -m layotto_apollo.testing`: run the Apollo test server (see `--help`)."""

from layotto_apollo.testing.server import main

main()

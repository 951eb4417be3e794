"""`python -m clip2point ...` runs the `c2p` command (and `torchrun ... -m clip2point ...`)."""

from clip2point.app import main

main()

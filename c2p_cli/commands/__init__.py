"""One module per `c2p` command. Heavy imports stay inside the command functions."""

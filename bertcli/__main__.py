"""`python -m bertcli` (and so `torchrun -m bertcli`) runs the command line."""

from bertcli.cli import main

if __name__ == "__main__":
    main()

"""`python -m ldm` (and so `accelerate launch -m ldm ...`) runs the `ldm` command."""

from ldm.cli import main

if __name__ == "__main__":
    main()

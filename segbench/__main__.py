"""`python -m segbench` runs the CLI (the GPU machine runs the package this way)."""

from segbench.cli import main

if __name__ == "__main__":
    main()

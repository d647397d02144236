"""``python -m dualist`` runs the command line."""

from dualist.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

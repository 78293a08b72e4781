"""``python -m genq``: the same command as ``genq``, for environments without the script
on PATH (a venv not activated, ``python -m`` in containers)."""

from genq.cli import main

if __name__ == "__main__":
    main()

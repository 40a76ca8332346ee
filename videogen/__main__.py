"""`python -m videogen ...` and `accelerate launch -m videogen ...` both land here."""

from videogen.cli import main

if __name__ == "__main__":
    main()

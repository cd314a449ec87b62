"""SAM2 VLM Studio, the web app: `python app.py` (see studio_app/launch.py for the settings it reads)."""

from studio_app.launch import main

if __name__ == "__main__":
    main()

"""Not a package to import: the folder that ``lumen-agent exec`` and
``lumen-agent hook path`` put on PYTHONPATH, for its ``sitecustomize.py``."""

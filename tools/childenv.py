"""The interpreters the measuring tools start: with or without hakmem installed.

A child runs with hakmem installed through a ``sitecustomize.py`` on its PYTHONPATH
(``write_site``), which pyperf passes on to its workers; it imports this checkout's
hakmem when the checkout is built in place (``BUILT``), else the installed one.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILT = any(f.startswith("front.") and f.endswith((".so", ".pyd"))
            for f in os.listdir(os.path.join(ROOT, "hakmem")))
SITE = "import hakmem\nhakmem.install()\n"


def write_site(directory):
    """``directory``/site/sitecustomize.py, which installs hakmem; the site directory."""
    site = os.path.join(directory, "site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write(SITE)
    return site


def env(site=None):
    """The child's environment: this checkout (if built), then ``site`` (if given),
    then the caller's PYTHONPATH; no HAKMEM_INSTALL (the baseline must be pymalloc)."""
    out = dict(os.environ)
    path = ([ROOT] if BUILT else []) + ([site] if site else []) + [out.get("PYTHONPATH", "")]
    out["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    out.pop("HAKMEM_INSTALL", None)
    return out
